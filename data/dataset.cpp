// Task readers, datasets and the epoch batcher.
#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "core/error.h"

namespace lopper::data {

TaskSpec TaskSpec::glue(const std::string& task) {
  TaskSpec s;
  if (task == "sst2") return s;
  if (task == "cola") {
    s.header = false;
    s.text = "3";
    s.label = "1";
    return s;
  }
  if (task == "mrpc") {
    s.text = "#1 String"; s.text_pair = "#2 String"; s.label = "Quality";
    return s;
  }
  if (task == "rte" || task == "qnli" || task == "wnli") {
    s.text = task == "qnli" ? "question" : "sentence1";
    s.text_pair = task == "qnli" ? "sentence" : "sentence2";
    if (task != "wnli") {
      s.label_type = "string";
      s.label_names = {"entailment", "not_entailment"};
    }
    return s;
  }
  if (task == "qqp") {
    s.text = "question1"; s.text_pair = "question2"; s.label = "is_duplicate";
    return s;
  }
  if (task == "mnli") {
    s.text = "sentence1"; s.text_pair = "sentence2"; s.label = "gold_label";
    s.label_type = "string";
    s.label_names = {"contradiction", "entailment", "neutral"};
    s.num_labels = 3;
    return s;
  }
  if (task == "stsb") {
    s.text = "sentence1"; s.text_pair = "sentence2"; s.label = "score";
    s.label_type = "float";
    s.num_labels = 1;
    return s;
  }
  LOPPER_FAIL("[data] unknown GLUE task '", task, "' (expected sst2, cola, mrpc, rte, qnli, qqp, mnli, stsb, wnli, ",
              "or \"custom\" with explicit columns)");
}

namespace {

std::vector<std::string> split_line(const std::string& line, char sep, bool csv) {
  std::vector<std::string> out;
  if (!csv) {  // GLUE TSV: split on tabs only, no quote handling
    std::string cur;
    for (char c : line) {
      if (c == sep) { out.push_back(cur); cur.clear(); }
      else cur.push_back(c);
    }
    out.push_back(cur);
    return out;
  }
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') { cur.push_back('"'); ++i; }
      else if (c == '"') quoted = false;
      else cur.push_back(c);
    } else if (c == '"') {
      quoted = true;
    } else if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

// A data file's text with a UTF-8 byte-order mark dropped and every line end (\r\n, \r
// or \n) made \n: files saved by spreadsheets and old Mac editors read like any other.
std::string read_text(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LOPPER_CHECK(fs::exists(path, ec), "[data] '", path, "' does not exist");
  LOPPER_CHECK(!fs::is_directory(path, ec), "[data] '", path, "' is a folder, expected a data file");
  std::ifstream f(path, std::ios::binary);
  LOPPER_CHECK(f.good(), "[data] cannot open '", path, "'");
  std::string raw((std::istreambuf_iterator<char>(f)), {}), text;
  size_t start = raw.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;
  text.reserve(raw.size());
  for (size_t i = start; i < raw.size(); ++i) {
    if (raw[i] != '\r') text.push_back(raw[i]);
    else if (i + 1 == raw.size() || raw[i + 1] != '\n') text.push_back('\n');
  }
  return text;
}

bool is_index(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit); }

float parse_label(const std::string& raw, const TaskSpec& spec, const std::string& where) {
  if (spec.label_type == "float") {
    try {
      size_t used = 0;
      float v = std::stof(raw, &used);
      if (used == raw.size() && std::isfinite(v)) return v;
    } catch (...) {}
    LOPPER_FAIL(where, ": label '", raw, "' is not a finite number (in float32)");
  }
  if (spec.label_type == "string") {
    for (size_t i = 0; i < spec.label_names.size(); ++i)
      if (spec.label_names[i] == raw) return static_cast<float>(i);
    std::string names;
    for (auto& n : spec.label_names) names += (names.empty() ? "" : ", ") + n;
    LOPPER_FAIL(where, ": label '", raw, "' is not one of {", names, "}");
  }
  int64_t v = -1;
  try {
    size_t used = 0;
    v = std::stoll(raw, &used);
    if (used != raw.size()) v = -1;
  } catch (...) {}
  LOPPER_CHECK(v >= 0 && v < spec.num_labels, where, ": label '", raw, "' is not a class index in [0, ", spec.num_labels,
               ")");
  return static_cast<float>(v);
}

}  // namespace

std::vector<Example> read_examples(const std::string& path, const TaskSpec& spec, int64_t max_examples) {
  std::istringstream f(read_text(path));
  std::vector<Example> out;
  std::string line;
  int64_t lineno = 0;
  if (spec.format == "jsonl") {
    while (std::getline(f, line) && (max_examples == 0 || static_cast<int64_t>(out.size()) < max_examples)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::string where = path + ":" + std::to_string(lineno);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        LOPPER_FAIL(where, ": not valid JSON: ", e.what());
      }
      auto field = [&](const std::string& key) -> std::string {
        LOPPER_CHECK(j.is_object() && j.contains(key), where, ": no field '", key, "'");
        return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
      };
      Example e;
      e.text = field(spec.text);
      if (!spec.text_pair.empty()) e.text_pair = field(spec.text_pair);
      e.label = parse_label(field(spec.label), spec, where);
      out.push_back(std::move(e));
    }
  } else {
    LOPPER_CHECK(spec.format == "tsv" || spec.format == "csv", "[data] unknown format '", spec.format,
                 "' (expected tsv, csv, jsonl)");
    bool csv = spec.format == "csv";
    char sep = csv ? ',' : '\t';
    std::vector<std::string> names;
    if (spec.header) {
      LOPPER_CHECK(static_cast<bool>(std::getline(f, line)), "[data] '", path, "' is empty (expected a header line)");
      ++lineno;
      names = split_line(line, sep, csv);
    }
    auto column = [&](const std::string& c, const char* role) -> size_t {
      if (is_index(c)) return static_cast<size_t>(std::stoul(c));
      LOPPER_CHECK(spec.header, "[data] ", role, " column '", c, "' is a name, but '", path,
                   "' has no header: give a 0-based index");
      auto it = std::find(names.begin(), names.end(), c);
      LOPPER_CHECK(it != names.end(), "[data] '", path, "' has no ", role, " column '", c, "'");
      return static_cast<size_t>(it - names.begin());
    };
    size_t ct = column(spec.text, "text"), cl = column(spec.label, "label");
    size_t cp = spec.text_pair.empty() ? 0 : column(spec.text_pair, "text_pair");
    while (std::getline(f, line) && (max_examples == 0 || static_cast<int64_t>(out.size()) < max_examples)) {
      ++lineno;
      if (line.empty()) continue;
      std::string where = path + ":" + std::to_string(lineno);
      auto cols = split_line(line, sep, csv);
      size_t need = std::max({ct, cl, spec.text_pair.empty() ? size_t{0} : cp}) + 1;
      LOPPER_CHECK(cols.size() >= need, where, ": row has ", cols.size(), " columns, needs at least ", need);
      Example e;
      e.text = cols[ct];
      if (!spec.text_pair.empty()) e.text_pair = cols[cp];
      e.label = parse_label(cols[cl], spec, where);
      out.push_back(std::move(e));
    }
  }
  LOPPER_CHECK(!out.empty(), "[data] '", path, "' holds no examples");
  return out;
}

Dataset::Dataset(const std::vector<Example>& examples, const Tokenizer& tok, int64_t max_seq_len, bool regression)
    : pad_id_(tok.pad_id()), regression_(regression) {
  encodings_.reserve(examples.size());
  for (const Example& e : examples) {
    encodings_.push_back(e.text_pair.empty() ? tok.encode(e.text, nullptr, max_seq_len)
                                             : tok.encode(e.text, &e.text_pair, max_seq_len));
    labels_.push_back(e.label);
  }
}

Batch Dataset::collate(const std::vector<int64_t>& indices) const {
  int64_t b = static_cast<int64_t>(indices.size()), t = 0;
  for (int64_t i : indices) t = std::max(t, length(i));
  std::vector<int64_t> ids(b * t, pad_id_), types(b * t, 0), mask(b * t, 0);
  std::vector<int64_t> cls(b);
  std::vector<float> reg(b);
  Batch out;
  for (int64_t r = 0; r < b; ++r) {
    const Encoding& e = encodings_[indices[r]];
    for (size_t j = 0; j < e.input_ids.size(); ++j) {
      ids[r * t + j] = e.input_ids[j];
      types[r * t + j] = e.token_type_ids[j];
      mask[r * t + j] = 1;
    }
    out.tokens += static_cast<int64_t>(e.input_ids.size());
    cls[r] = static_cast<int64_t>(labels_[indices[r]]);
    reg[r] = labels_[indices[r]];
  }
  out.input_ids = Tensor::from_vector(ids, {b, t});
  out.token_type_ids = Tensor::from_vector(types, {b, t});
  out.attention_mask = Tensor::from_vector(mask, {b, t});
  out.labels = regression_ ? Tensor::from_vector(reg, {b}) : Tensor::from_vector(cls, {b});
  return out;
}

int64_t mean_length(const Dataset& d) {
  double total = 0;
  for (int64_t i = 0; i < d.size(); ++i) total += static_cast<double>(d.length(i));
  return static_cast<int64_t>(std::lround(total / static_cast<double>(d.size())));
}

std::vector<std::vector<int64_t>> epoch_batches(const Dataset& d, int64_t batch_size, bool shuffle, uint64_t seed,
                                                int64_t epoch, int64_t rank, int64_t world) {
  LOPPER_CHECK(batch_size > 0, "[data] batch_size must be > 0, got ", batch_size);
  std::vector<int64_t> order(d.size());
  std::iota(order.begin(), order.end(), 0);
  Generator g(seed * 1000003ull + static_cast<uint64_t>(epoch));
  if (shuffle) {
    shuffle_in_place(order, g);
    int64_t window = batch_size * 50;
    for (int64_t s = 0; s < d.size(); s += window) {
      auto end = order.begin() + std::min(d.size(), s + window);
      std::stable_sort(order.begin() + s, end, [&](int64_t a, int64_t b) { return d.length(a) < d.length(b); });
    }
  }
  std::vector<std::vector<int64_t>> batches;
  for (int64_t s = 0; s < d.size(); s += batch_size)
    batches.emplace_back(order.begin() + s, order.begin() + std::min(d.size(), s + batch_size));
  if (shuffle) shuffle_in_place(batches, g);
  std::vector<std::vector<int64_t>> mine;
  for (size_t i = static_cast<size_t>(rank); i < batches.size(); i += static_cast<size_t>(world)) mine.push_back(batches[i]);
  return mine;
}

}  // namespace lopper::data
