// JSON fields with path-named errors.
#include "trainers/fields.h"

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "core/error.h"

namespace lopper::trainers {

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

// "from 1e-12 to 10", "1 or more", for range errors.
std::string range_text(double lo, double hi) {
  std::ostringstream os;
  os.precision(12);
  if (hi >= static_cast<double>(INT64_MAX)) os << lo << " or more";
  else os << "from " << lo << " to " << hi;
  return os.str();
}

}  // namespace

std::string join_path(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

Fields::Fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
  LOPPER_CHECK(j.is_object(), path_.empty() ? "experiment" : path_, ": expected an object, got ", j.dump());
}

bool Fields::has(const std::string& k) {
  known_.insert(k);
  if (!j_.contains(k)) return false;
  LOPPER_CHECK(!j_[k].is_null(), join_path(path_, k), ": null is not a value (leave the key out for its default)");
  return true;
}

std::string Fields::str(const std::string& k, std::string def, bool required) {
  if (!has(k)) {
    LOPPER_CHECK(!required, join_path(path_, k), ": required (a string)");
    out_[k] = def;
    return def;
  }
  LOPPER_CHECK(j_[k].is_string(), join_path(path_, k), ": expected a string, got ", j_[k].dump());
  out_[k] = j_[k];
  return j_[k].get<std::string>();
}

std::string Fields::choice(const std::string& k, std::string def, const std::vector<std::string>& options) {
  std::string v = str(k, def);
  if (std::find(options.begin(), options.end(), v) == options.end()) {
    std::string all;
    for (auto& o : options) all += (all.empty() ? "" : ", ") + o;
    LOPPER_FAIL(join_path(path_, k), ": '", v, "' is not one of ", all);
  }
  return v;
}

json Fields::value(const std::string& k, json def) {
  json v = has(k) ? j_[k] : std::move(def);
  out_[k] = v;
  return v;
}

double Fields::num(const std::string& k, double def, double lo, double hi, const char* expect) {
  double v = def;
  if (has(k)) {
    LOPPER_CHECK(j_[k].is_number(), join_path(path_, k), ": expected a number (", expect, "), got ", j_[k].dump());
    v = j_[k].get<double>();
    LOPPER_CHECK(v >= lo && v <= hi, join_path(path_, k), ": ", j_[k].dump(), " is out of range (expected ", expect,
                 ": ", range_text(lo, hi), ")");
  }
  out_[k] = v;
  return v;
}

int64_t Fields::integer(const std::string& k, int64_t def, int64_t lo, int64_t hi, const char* expect) {
  int64_t v = def;
  if (has(k)) {
    const json& x = j_[k];
    LOPPER_CHECK(x.is_number_integer(), join_path(path_, k), ": expected an integer (", expect, "), got ", x.dump());
    // An unsigned value past int64's range would wrap to a negative one.
    bool fits = !x.is_number_unsigned() || x.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX);
    if (fits) v = x.get<int64_t>();
    LOPPER_CHECK(fits && v >= lo && v <= hi, join_path(path_, k), ": ", x.dump(), " is out of range (expected ", expect,
                 ": ", range_text(static_cast<double>(lo), static_cast<double>(hi)), ")");
  }
  out_[k] = v;
  return v;
}

bool Fields::boolean(const std::string& k, bool def) {
  bool v = def;
  if (has(k)) {
    LOPPER_CHECK(j_[k].is_boolean(), join_path(path_, k), ": expected true or false, got ", j_[k].dump());
    v = j_[k].get<bool>();
  }
  out_[k] = v;
  return v;
}

std::vector<std::string> Fields::strings(const std::string& k) {
  std::vector<std::string> v;
  if (has(k)) {
    LOPPER_CHECK(j_[k].is_array() && std::all_of(j_[k].begin(), j_[k].end(), [](auto& x) { return x.is_string(); }),
                 join_path(path_, k), ": expected a list of strings, got ", j_[k].dump());
    v = j_[k].get<std::vector<std::string>>();
  }
  out_[k] = v;
  return v;
}

void Fields::finish() {
  for (auto& [k, v] : j_.items()) {
    if (known_.count(k)) continue;
    std::string best;
    size_t best_d = 3;
    for (auto& cand : known_) {
      size_t d = edit_distance(k, cand);
      if (d < best_d) {
        best_d = d;
        best = cand;
      }
    }
    LOPPER_FAIL(join_path(path_, k), ": unknown key", best.empty() ? "" : " (did you mean '" + join_path(path_, best) + "'?)");
  }
}

}  // namespace lopper::trainers
