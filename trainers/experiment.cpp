// Experiment parsing with path-named errors.
#include "trainers/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "core/device.h"
#include "core/error.h"
#include "trainers/fields.h"
#include "trainers/stages.h"

namespace lopper::trainers {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The names of the stage kinds with a given relation to masks, joined by sep.
std::string kinds_with(StageKind::Masks m, const char* sep) {
  std::string s;
  for (const StageKind& k : stage_kinds())
    if (k.masks == m) s += (s.empty() ? "" : sep) + k.name;
  return s;
}

}  // namespace

void apply_override(json& j, const std::string& assignment) {
  size_t eq = assignment.find('=');
  LOPPER_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment, "': expected key.path=value");
  std::string key = assignment.substr(0, eq), raw = assignment.substr(eq + 1);
  json value;
  try {
    value = json::parse(raw);
  } catch (const json::out_of_range&) {
    LOPPER_FAIL("--set ", key, ": ", raw, " is not a number a double can hold");
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
    walked = join_path(walked, p);
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

std::string resolve_path(const Experiment& e, const std::string& p) {
  return p.empty() ? p : (fs::path(e.file).parent_path() / p).lexically_normal().string();
}

Experiment parse_experiment(json j, const std::string& file) {
  Experiment e;
  e.file = fs::absolute(file).lexically_normal().string();
  auto resolve = [&](const std::string& p) { return resolve_path(e, p); };
  // kind: a "file" or a "folder".
  auto must_exist = [&](const std::string& key, const std::string& p, const char* kind) {
    LOPPER_CHECK(fs::exists(p), key, ": '", p, "' does not exist");
    bool folder = fs::is_directory(p);
    LOPPER_CHECK(folder == (std::string(kind) == "folder"), key, ": '", p, "' is a ", folder ? "folder" : "file",
                 ", expected a ", kind);
  };

  Fields top(j, "");
  e.name = top.str("name", fs::path(file).stem().string());
  e.seed = static_cast<uint64_t>(top.integer("seed", 42, 0, INT64_MAX, "an integer >= 0"));
  if (!top.has("output_dir")) {  // the name becomes a folder under runs/
    LOPPER_CHECK(!e.name.empty() && e.name[0] != '.' &&
                     e.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                         std::string::npos,
                 "name: '", e.name, "' is used as the folder runs/NAME (output_dir is not set), so it may hold only letters, ",
                 "digits, '.', '_' and '-', and not start with '.'");
  }
  std::string output_dir = top.str("output_dir", "runs/" + e.name);
  LOPPER_CHECK(!output_dir.empty(), "output_dir: empty (leave the key out for runs/NAME)");
  e.output_dir = resolve(output_dir);
  LOPPER_CHECK(fs::path(e.output_dir) != fs::path(e.output_dir).root_path(), "output_dir: '", e.output_dir,
               "' is the root of the file system");
  e.threads = top.integer("threads", 0, 0, 1024, "0 for all cores, or a thread count");
  e.device = top.str("device", "cpu");
  try {
    e.device = Device::parse(e.device).str();
  } catch (const Error&) {
    LOPPER_FAIL("device: '", e.device, "' is not cpu, cuda or cuda:N");
  }

  LOPPER_CHECK(top.has("model"), "model: required (an object with \"path\")");
  Fields m(j["model"], "model");
  e.model.path = resolve(m.str("path", "", true));
  e.model.num_labels = m.integer("num_labels", 0, 0, 100000, "0 (from the task) or the number of classes");
  m.finish();
  must_exist("model.path", e.model.path, "folder");
  must_exist("model.path", (fs::path(e.model.path) / "config.json").string(), "file");

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

  std::optional<Fields> teacher;
  if (top.has("teacher")) {
    Fields& t = teacher.emplace(j["teacher"], "teacher");
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
    t.set("layer_map", e.teacher.layer_map);
    t.set("path", e.teacher.path);
    t.finish();
    if (!e.teacher.path.empty()) must_exist("teacher.path", (fs::path(e.teacher.path) / "config.json").string(), "file");
  }

  // Evaluation and latency run the Linears whose weights are block-sparse enough through
  // the block-sparse matmul (nn/block_sparse.h); max_density 0 keeps everything dense. The
  // dense ones go through the block-sparse kernel, all blocks kept, for batches of at most
  // dense_max_rows tokens (where it beats oneDNN's sgemm; docs/benchmarks.md), or through
  // the panel-packed GEMM when dense_panels asks for it.
  const json no_block_sparse = json::object();
  Fields bs(top.has("block_sparse") ? j["block_sparse"] : no_block_sparse, "block_sparse");
  e.block_sparse.max_density = bs.num("max_density", 0.6, 0, 1, "0 (off) to 1: the largest share of non-zero blocks");
  e.block_sparse.dense_max_rows = bs.integer("dense_max_rows", nn::BlockSparseOptions{}.dense_max_rows, 0, int64_t{1} << 40,
                                             "tokens in a batch, 0 (off) or more");
  e.block_sparse.dense_panels = nn::BlockSparseOptions::panels_from_name(
      bs.choice("dense_panels", "never", nn::BlockSparseOptions::panels_names()));
  {
    const json blocks = bs.value("blocks", {{32, 32}, {16, 16}});
    bool ok = blocks.is_array() && !blocks.empty();
    for (const json& b : blocks)
      ok = ok && b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
           b[0].get<int64_t>() > 0 && b[1].get<int64_t>() > 0;
    LOPPER_CHECK(ok, "block_sparse.blocks: expected a non-empty list of [rows, cols] block shapes, got ", blocks.dump());
    e.block_sparse.blocks.clear();
    for (const json& b : blocks) e.block_sparse.blocks.emplace_back(b[0].get<int64_t>(), b[1].get<int64_t>());
  }
  bs.finish();

  LOPPER_CHECK(top.has("stages") && j["stages"].is_array() && !j["stages"].empty(),
               "stages: required (a non-empty list of {\"kind\": ...})");
  json stages = json::array();
  bool needs_train = false, needs_dev = false;
  const StageKind* open = nullptr;  // the stage whose pruning masks are open
  std::string holding;              // the path of a stage that holds weights at zero
  std::string staying;              // the path of a stage whose rule stays (attention_prune)
  using Masks = StageKind::Masks;
  for (size_t i = 0; i < j["stages"].size(); ++i) {
    StageSpec st;
    st.path = "stages." + std::to_string(i);
    Fields s(j["stages"][i], st.path);
    st.kind = s.choice("kind", "", stage_names());
    const StageKind& k = stage_kind(st.kind);
    // Masks live from the stage that opens them to the one that finalizes them; only
    // inspecting stages may look at them between.
    LOPPER_CHECK(!open || k.masks == Masks::inspect || k.masks == Masks::finalize, st.path, ": kind '", st.kind,
                 "' cannot follow ", open->name, " before a ", kinds_with(Masks::finalize, " or "), " stage (only ",
                 kinds_with(Masks::inspect, ", "), " can)");
    LOPPER_CHECK(k.masks != Masks::finalize || open, st.path, ": ", st.kind, " needs a ", kinds_with(Masks::open, " or "),
                 " stage before it");
    // After held zeros or a staying rule, shapes are fixed and no masks open.
    for (const auto& [after, kind, why] :
         {std::tuple{&holding, "nm_prune", "its masks hold every weight's shape fixed for the rest of the run (prune "
                                           "heads and neurons before it)"},
          std::tuple{&staying, "attention_prune", "its rule knows every layer's heads and stays for the rest of the run "
                                                  "(prune heads and weights before it)"}})
      LOPPER_CHECK(after->empty() || (k.masks != Masks::open && k.masks != Masks::finalize && !k.reshapes), st.path,
                   ": kind '", st.kind, "' cannot follow the ", kind, " stage ", *after, ": ", why);
    LOPPER_CHECK(holding.empty() || !k.holds_zeros, st.path, ": a second nm_prune after ", holding,
                 ": a run holds one pattern (summary.json checks every held weight against it); set the one you want");
    LOPPER_CHECK(staying.empty() || k.masks != Masks::stays, st.path, ": a second ", st.kind, " after ", staying,
                 ": a run keeps one attention rule; set the one you want");
    if (k.holds_zeros) holding = st.path;
    if (k.masks == Masks::stays) staying = st.path;
    if (k.masks == Masks::open) open = &k;
    if (k.masks == Masks::finalize) open = nullptr;
    needs_train = needs_train || k.trains;
    needs_dev = needs_dev || k.trains || k.evaluates;
    st.options = k.parse(s, e);
    s.finish();
    e.stages.push_back(st);
    stages.push_back(s.resolved());
  }
  // A run clears and rewrites these folders of output_dir: no input may live in them.
  for (auto [key, input] : {std::pair{"model.path", e.model.path}, std::pair{"teacher.path", e.teacher.path},
                            std::pair{"data.train", e.data.train}, std::pair{"data.dev", e.data.dev}}) {
    if (input.empty()) continue;
    for (const char* sub : {"", "model", "best", "teacher", "checkpoints"}) {
      fs::path out = (fs::path(e.output_dir) / sub).lexically_normal(), in = fs::path(input).lexically_normal();
      auto rel = in.lexically_relative(out);
      bool inside = *sub ? !rel.empty() && *rel.begin() != ".." : out == in;
      LOPPER_CHECK(!inside, key, ": '", input, "' is inside the folder '", out.string(),
                   "' that the run writes (output_dir); choose another output_dir");
    }
  }
  LOPPER_CHECK(!open, "stages: ", open ? open->name : "", " must be followed by a ", kinds_with(Masks::finalize, " or "),
               " stage");
  top.finish();
  if (needs_train) {
    LOPPER_CHECK(!e.data.train.empty(), "data.train: required by the training stages");
    must_exist("data.train", e.data.train, "file");
  }
  if (needs_dev) {
    LOPPER_CHECK(!e.data.dev.empty(), "data.dev: required by the training and evaluate stages");
    must_exist("data.dev", e.data.dev, "file");
  }
  // The resolved experiment: every key with the value the run uses, defaults included,
  // paths absolute. It loads back as an experiment file of its own.
  top.set("output_dir", e.output_dir);
  top.set("device", e.device);
  m.set("path", e.model.path);
  d.set("train", e.data.train);
  d.set("dev", e.data.dev);
  e.resolved = top.resolved();
  e.resolved["model"] = m.resolved();
  e.resolved["data"] = d.resolved();
  if (teacher) e.resolved["teacher"] = teacher->resolved();
  e.resolved["block_sparse"] = bs.resolved();
  e.resolved["stages"] = stages;
  return e;
}

namespace {

// Parses an experiment file, refusing a key given twice in one object (JSON allows it and
// keeps the last, which hides edits): the error names the key by its path.
json parse_strict(std::istream& in, const std::string& path) {
  struct Frame {
    bool array = false;
    int64_t index = -1;
    std::set<std::string> keys;
    std::string key;
  };
  std::vector<Frame> frames;
  auto where = [&](size_t depth) {  // the path through the first depth frames
    std::string p;
    for (size_t i = 0; i < depth && i < frames.size(); ++i) {
      const Frame& f = frames[i];
      std::string part = f.array ? std::to_string(std::max<int64_t>(f.index, 0)) : f.key;
      if (!part.empty()) p = join_path(p, part);
    }
    return p;
  };
  auto element = [&] {  // a value starts: in an array, the next index
    if (!frames.empty() && frames.back().array) ++frames.back().index;
  };
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        element();
        frames.emplace_back().array = ev == json::parse_event_t::array_start;
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        frames.pop_back();
        break;
      case json::parse_event_t::key: {
        std::string k = parsed.get<std::string>();
        LOPPER_CHECK(frames.back().keys.insert(k).second, path, ": ", join_path(where(frames.size() - 1), k),
                     " is given twice (JSON would keep the last silently)");
        frames.back().key = k;
        break;
      }
      case json::parse_event_t::value:
        element();
        break;
    }
    return true;
  };
  try {
    return json::parse(in, cb);
  } catch (const json::out_of_range& e) {  // a number beyond a double: no position, but we know the key
    LOPPER_FAIL(path, ": ", where(frames.size()), ": ", e.what());
  } catch (const json::exception& e) {
    // A syntax error carries "at line L, column C"; a number too large for a double too.
    LOPPER_FAIL(path, ": not valid JSON: ", e.what());
  }
}

}  // namespace

json read_json_strict(const std::string& path, const std::string& what) {
  LOPPER_CHECK(!std::filesystem::is_directory(path), what, " '", path, "' is a folder, expected a file");
  std::ifstream f(path);
  LOPPER_CHECK(f.good(), "cannot open ", what, " '", path, "'");
  return parse_strict(f, path);
}

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  json j = read_json_strict(path, "experiment file");
  for (const std::string& o : overrides) apply_override(j, o);
  return parse_experiment(std::move(j), path);
}

}  // namespace lopper::trainers
