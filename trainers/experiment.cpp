// Experiment parsing with path-named errors.
#include "trainers/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

// Reads the keys of one JSON object, checking types and ranges; finish() rejects the rest.
class Fields {
 public:
  Fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    LOPPER_CHECK(j.is_object(), path_.empty() ? "experiment" : path_, ": expected an object, got ", j.dump());
  }

  bool has(const std::string& k) {
    known_.insert(k);
    return j_.contains(k) && !j_[k].is_null();
  }
  std::string str(const std::string& k, std::string def, bool required = false) {
    if (!has(k)) {
      LOPPER_CHECK(!required, join(path_, k), ": required (a string)");
      return def;
    }
    LOPPER_CHECK(j_[k].is_string(), join(path_, k), ": expected a string, got ", j_[k].dump());
    return j_[k].get<std::string>();
  }
  std::string choice(const std::string& k, std::string def, const std::vector<std::string>& options) {
    std::string v = str(k, def);
    if (std::find(options.begin(), options.end(), v) == options.end()) {
      std::string all;
      for (auto& o : options) all += (all.empty() ? "" : ", ") + o;
      LOPPER_FAIL(join(path_, k), ": '", v, "' is not one of ", all);
    }
    return v;
  }
  double num(const std::string& k, double def, double lo, double hi, const char* expect) {
    if (!has(k)) return def;
    LOPPER_CHECK(j_[k].is_number(), join(path_, k), ": expected a number (", expect, "), got ", j_[k].dump());
    double v = j_[k].get<double>();
    LOPPER_CHECK(v >= lo && v <= hi, join(path_, k), ": ", v, " is out of range (expected ", expect, ")");
    return v;
  }
  int64_t integer(const std::string& k, int64_t def, int64_t lo, int64_t hi, const char* expect) {
    if (!has(k)) return def;
    LOPPER_CHECK(j_[k].is_number_integer(), join(path_, k), ": expected an integer (", expect, "), got ", j_[k].dump());
    int64_t v = j_[k].get<int64_t>();
    LOPPER_CHECK(v >= lo && v <= hi, join(path_, k), ": ", v, " is out of range (expected ", expect, ")");
    return v;
  }
  bool boolean(const std::string& k, bool def) {
    if (!has(k)) return def;
    LOPPER_CHECK(j_[k].is_boolean(), join(path_, k), ": expected true or false, got ", j_[k].dump());
    return j_[k].get<bool>();
  }
  std::vector<std::string> strings(const std::string& k) {
    if (!has(k)) return {};
    LOPPER_CHECK(j_[k].is_array() && std::all_of(j_[k].begin(), j_[k].end(), [](auto& x) { return x.is_string(); }),
                 join(path_, k), ": expected a list of strings, got ", j_[k].dump());
    return j_[k].get<std::vector<std::string>>();
  }
  // Rejects keys nobody asked for, suggesting the nearest known one.
  void finish() {
    for (auto& [k, v] : j_.items()) {
      if (known_.count(k)) continue;
      std::string best;
      size_t best_d = 3;
      for (auto& cand : known_) {
        size_t d = edit_distance(k, cand);
        if (d < best_d) { best_d = d; best = cand; }
      }
      LOPPER_FAIL(join(path_, k), ": unknown key", best.empty() ? "" : " (did you mean '" + join(path_, best) + "'?)");
    }
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> known_;
};

}  // namespace

void apply_override(json& j, const std::string& assignment) {
  size_t eq = assignment.find('=');
  LOPPER_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment, "': expected key.path=value");
  std::string key = assignment.substr(0, eq), raw = assignment.substr(eq + 1);
  json value;
  try {
    value = json::parse(raw);
  } catch (const json::parse_error&) {
    value = raw;  // a bare string
  }
  json* node = &j;
  std::stringstream ss(key);
  std::string part, walked;
  std::vector<std::string> parts;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    walked = join(walked, p);
    bool last = i + 1 == parts.size();
    if (node->is_array()) {
      LOPPER_CHECK(!p.empty() && std::all_of(p.begin(), p.end(), ::isdigit), "--set ", key, ": '", walked,
                   "' indexes a list, expected a number");
      size_t idx = std::stoul(p);
      LOPPER_CHECK(idx < node->size(), "--set ", key, ": '", walked, "' is past the end of a list of ", node->size());
      node = &(*node)[idx];
    } else {
      LOPPER_CHECK(node->is_object() || node->is_null(), "--set ", key, ": '", walked, "' is not inside an object");
      node = &(*node)[p];
    }
    if (last) *node = value;
  }
}

Experiment parse_experiment(json j, const std::string& file) {
  Experiment e;
  e.file = fs::absolute(file).lexically_normal().string();
  fs::path base = fs::path(e.file).parent_path();
  auto resolve = [&](const std::string& p) { return p.empty() ? p : (base / p).lexically_normal().string(); };
  auto must_exist = [&](const std::string& key, const std::string& p) {
    LOPPER_CHECK(fs::exists(p), key, ": '", p, "' does not exist");
  };

  Fields top(j, "");
  e.name = top.str("name", fs::path(file).stem().string());
  e.seed = static_cast<uint64_t>(top.integer("seed", 42, 0, INT64_MAX, "an integer >= 0"));
  e.output_dir = resolve(top.str("output_dir", "runs/" + e.name));
  e.threads = top.integer("threads", 0, 0, 1024, "0 for all cores, or a thread count");

  LOPPER_CHECK(top.has("model"), "model: required (an object with \"path\")");
  Fields m(j["model"], "model");
  e.model.path = resolve(m.str("path", "", true));
  e.model.num_labels = m.integer("num_labels", 0, 0, 100000, "0 (from the task) or the number of classes");
  m.finish();
  must_exist("model.path", e.model.path);
  must_exist("model.path", (fs::path(e.model.path) / "config.json").string());

  LOPPER_CHECK(top.has("data"), "data: required (an object with task, train and dev)");
  Fields d(j["data"], "data");
  e.data.task = d.choice("task", "sst2", {"sst2", "cola", "mrpc", "rte", "qnli", "qqp", "mnli", "stsb", "wnli", "custom"});
  e.data.train = resolve(d.str("train", ""));
  e.data.dev = resolve(d.str("dev", ""));
  e.data.format = d.choice("format", "tsv", {"tsv", "csv", "jsonl"});
  e.data.header = d.boolean("header", e.data.task != "cola");
  e.data.text = d.str("text", "");
  e.data.text_pair = d.str("text_pair", "");
  e.data.label = d.str("label", "");
  e.data.label_type = d.has("label_type") ? d.choice("label_type", "int", {"int", "string", "float"}) : "";
  e.data.label_names = d.strings("label_names");
  e.data.max_seq_len = d.integer("max_seq_len", 128, 8, 512, "8 to 512");
  e.data.max_train_examples = d.integer("max_train_examples", 0, 0, INT64_MAX, "0 for all, or a count");
  e.data.max_eval_examples = d.integer("max_eval_examples", 0, 0, INT64_MAX, "0 for all, or a count");
  d.finish();
  LOPPER_CHECK(e.data.task != "custom" || (!e.data.text.empty() && !e.data.label.empty()), "data: task \"custom\" needs ",
               "text and label columns");

  if (top.has("teacher")) {
    Fields t(j["teacher"], "teacher");
    e.teacher.enabled = true;
    e.teacher.path = resolve(t.str("path", ""));
    e.teacher.temperature = t.num("temperature", 2.0, 1e-3, 100, "> 0");
    e.teacher.alpha = t.num("alpha", 0.5, 0, 1, "0 to 1");
    e.teacher.hidden_weight = t.num("hidden_weight", 0, 0, 1e6, ">= 0");
    if (t.has("layer_map")) {
      const json& m = j["teacher"]["layer_map"];
      bool ok = m.is_array() && std::all_of(m.begin(), m.end(), [](const json& p) {
        return p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer() && p[0] >= 0 && p[1] >= 0;
      });
      LOPPER_CHECK(ok, "teacher.layer_map: expected a list of [student, teacher] hidden-state index pairs, got ", m.dump());
      for (const json& p : m) e.teacher.layer_map.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    }
    t.finish();
    if (!e.teacher.path.empty()) must_exist("teacher.path", (fs::path(e.teacher.path) / "config.json").string());
  }

  LOPPER_CHECK(top.has("stages") && j["stages"].is_array() && !j["stages"].empty(),
               "stages: required (a non-empty list of {\"kind\": ...})");
  bool needs_train = false, needs_dev = false, gates_open = false;
  for (size_t i = 0; i < j["stages"].size(); ++i) {
    std::string path = "stages." + std::to_string(i);
    Fields s(j["stages"][i], path);
    StageSpec st;
    st.kind = s.choice("kind", "", {"finetune", "head_gates", "remove_heads", "mask_tune", "evaluate", "export"});
    bool training = st.kind == "finetune" || st.kind == "head_gates" || st.kind == "mask_tune";
    // Gates live from head_gates to remove_heads; only evaluation may look at them between.
    LOPPER_CHECK(!gates_open || st.kind == "evaluate" || st.kind == "remove_heads", path, ": kind '", st.kind,
                 "' cannot follow head_gates before a remove_heads stage (only evaluate can)");
    LOPPER_CHECK(st.kind != "remove_heads" || gates_open, path, ": remove_heads needs a head_gates stage before it");
    if (st.kind == "head_gates") gates_open = true;
    if (st.kind == "remove_heads") gates_open = false;
    if (training) {
      needs_train = needs_dev = true;
      st.epochs = s.num("epochs", 1, 0, 1000, "> 0");
      st.max_steps = s.integer("max_steps", 0, 0, INT64_MAX, "0 (from epochs) or a step count");
      LOPPER_CHECK(st.epochs > 0 || st.max_steps > 0, path, ": needs epochs > 0 or max_steps > 0");
      st.lr = s.num("lr", 5e-5, 1e-12, 10, "a learning rate > 0");
      st.batch_size = s.integer("batch_size", 32, 1, 65536, "1 or more");
      st.eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
      st.weight_decay = s.num("weight_decay", 0.01, 0, 10, ">= 0");
      st.warmup_ratio = s.num("warmup_ratio", 0.06, 0, 1, "0 to 1");
      st.schedule = s.choice("schedule", "linear", {"linear", "cosine", "constant"});
      st.grad_accum = s.integer("grad_accum", 1, 1, 4096, "1 or more");
      st.max_grad_norm = s.num("max_grad_norm", 1.0, 0, 1e9, ">= 0 (0 disables clipping)");
      st.label_smoothing = s.num("label_smoothing", 0, 0, 1, "0 to 1");
      st.eval_every = s.integer("eval_every", 0, 0, INT64_MAX, "0 (each epoch) or a step count");
      st.checkpoint_every = s.integer("checkpoint_every", 0, 0, INT64_MAX, "0 (at each evaluation) or a step count");
      st.log_every = s.integer("log_every", 50, 1, INT64_MAX, "1 or more");
      st.load_best = s.boolean("load_best", st.kind != "head_gates");
      st.distill = s.boolean("distill", st.kind != "finetune" && e.teacher.enabled);
      LOPPER_CHECK(!st.distill || e.teacher.enabled, path, ".distill: needs a \"teacher\" block");
    }
    if (st.kind == "head_gates") {
      st.l0_penalty = s.num("l0_penalty", 0, 0, 1e6, ">= 0");
      st.target_heads = s.integer("target_heads", 0, 0, 1 << 20, "0 (use l0_penalty) or a head count");
      LOPPER_CHECK((st.l0_penalty > 0) != (st.target_heads > 0), path, ": set exactly one of l0_penalty (> 0) and ",
                   "target_heads (> 0)");
      st.target_warmup_ratio = s.num("target_warmup_ratio", 0.5, 0, 1, "0 to 1");
      st.lagrangian_lr = s.num("lagrangian_lr", 0.05, 0, 1e3, ">= 0");
      st.gate_lr = s.num("gate_lr", 0.1, 1e-12, 100, "a learning rate > 0");
      st.temperature = s.num("temperature", 2.0 / 3.0, 1e-3, 100, "> 0 (Hard-Concrete beta)");
      st.gate_init = s.num("gate_init", 3.0, -100, 100, "an initial log_alpha");
      st.ffn_gates = s.boolean("ffn_gates", false);
      st.ffn_l0_penalty = s.num("ffn_l0_penalty", 0, 0, 1e6, ">= 0");
      LOPPER_CHECK(st.ffn_gates == (st.ffn_l0_penalty > 0), path, ": ffn_gates needs ffn_l0_penalty > 0, and ",
                   "ffn_l0_penalty needs ffn_gates");
    } else if (st.kind == "remove_heads") {
      st.threshold = s.num("threshold", 0.5, 0, 1, "0 to 1");
      st.allow_empty_layers = s.boolean("allow_empty_layers", false);
    } else if (st.kind == "evaluate") {
      needs_dev = true;
      st.eval_batch_size = s.integer("eval_batch_size", 64, 1, 65536, "1 or more");
      st.write_predictions = s.boolean("write_predictions", false);
    } else if (st.kind == "export") {
      st.format = s.choice("format", "safetensors", {"safetensors"});
    }
    s.finish();
    e.stages.push_back(st);
  }
  LOPPER_CHECK(!gates_open, "stages: head_gates must be followed by a remove_heads stage");
  top.finish();
  if (needs_train) {
    LOPPER_CHECK(!e.data.train.empty(), "data.train: required by the training stages");
    must_exist("data.train", e.data.train);
  }
  if (needs_dev) {
    LOPPER_CHECK(!e.data.dev.empty(), "data.dev: required by the training and evaluate stages");
    must_exist("data.dev", e.data.dev);
  }
  // The resolved file: what ran, with absolute paths.
  e.resolved = j;
  e.resolved["name"] = e.name;
  e.resolved["seed"] = e.seed;
  e.resolved["output_dir"] = e.output_dir;
  e.resolved["model"]["path"] = e.model.path;
  if (!e.data.train.empty()) e.resolved["data"]["train"] = e.data.train;
  if (!e.data.dev.empty()) e.resolved["data"]["dev"] = e.data.dev;
  if (!e.teacher.path.empty()) e.resolved["teacher"]["path"] = e.teacher.path;
  return e;
}

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream f(path);
  LOPPER_CHECK(f.good(), "cannot open experiment file '", path, "'");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::parse_error& e) {
    // e.what() carries "at line L, column C".
    LOPPER_FAIL(path, ": not valid JSON: ", e.what());
  }
  for (const std::string& o : overrides) apply_override(j, o);
  return parse_experiment(std::move(j), path);
}

}  // namespace lopper::trainers
