// Reads the keys of one JSON object of an experiment file, checking types and ranges, and
// names every mistake by its JSON path ("stages.2.lr: ..."); finish() rejects keys nobody
// asked for and suggests the nearest known one. Every value it returns, given or default,
// is recorded in resolved(): config.resolved.json holds every key with its value. null is
// never a value (leave a key out for its default). Not the experiment's structure: the
// parser and each stage kind's parse function say which keys exist.
#pragma once
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace lopper::trainers {

class Fields {
 public:
  Fields(const nlohmann::json& j, std::string path);  // throws unless j is an object

  bool has(const std::string& k);  // present (throws if null); marks k as known
  std::string str(const std::string& k, std::string def, bool required = false);
  std::string choice(const std::string& k, std::string def, const std::vector<std::string>& options);
  double num(const std::string& k, double def, double lo, double hi, const char* expect);
  int64_t integer(const std::string& k, int64_t def, int64_t lo, int64_t hi, const char* expect);
  bool boolean(const std::string& k, bool def);
  std::vector<std::string> strings(const std::string& k);
  // The value as written (or def), unchecked: for shapes the caller validates with path().
  nlohmann::json value(const std::string& k, nlohmann::json def);
  void finish();

  const std::string& path() const { return path_; }
  // The keys read so far with the values returned; set() records one read another way.
  const nlohmann::json& resolved() const { return out_; }
  void set(const std::string& k, nlohmann::json v) { out_[k] = std::move(v); }

 private:
  const nlohmann::json& j_;
  std::string path_;
  std::set<std::string> known_;
  nlohmann::json out_ = nlohmann::json::object();
};

// "a.b" from ("a", "b"); just the key at the top level.
std::string join_path(const std::string& path, const std::string& key);

}  // namespace lopper::trainers
