// BertConfig parsing and writing.
#include "nn/bert_config.h"

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/error.h"

namespace lopper::nn {

namespace {
template <class T>
void read(const nlohmann::json& j, const char* key, T& out, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    out = j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    LOPPER_FAIL("[bert config] ", what, ": key '", key, "' has the wrong type (", j[key].dump(), ")");
  }
}
}  // namespace

BertConfig BertConfig::from_json(const nlohmann::json& j, const std::string& what) {
  LOPPER_CHECK(j.is_object(), "[bert config] ", what, ": expected a JSON object");
  BertConfig c;
  c.original = j;
  if (j.contains("model_type")) {
    std::string mt = j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
    LOPPER_CHECK(mt == "bert", "[bert config] ", what, ": model_type is '", mt, "', Lopper loads 'bert' models");
  }
  read(j, "vocab_size", c.vocab_size, what);
  read(j, "hidden_size", c.hidden_size, what);
  read(j, "num_hidden_layers", c.num_hidden_layers, what);
  read(j, "num_attention_heads", c.num_attention_heads, what);
  read(j, "intermediate_size", c.intermediate_size, what);
  read(j, "hidden_act", c.hidden_act, what);
  read(j, "hidden_dropout_prob", c.hidden_dropout_prob, what);
  read(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, what);
  read(j, "max_position_embeddings", c.max_position_embeddings, what);
  read(j, "type_vocab_size", c.type_vocab_size, what);
  read(j, "pad_token_id", c.pad_token_id, what);
  read(j, "layer_norm_eps", c.layer_norm_eps, what);
  if (j.contains("id2label") && j["id2label"].is_object()) c.num_labels = static_cast<int64_t>(j["id2label"].size());
  read(j, "num_labels", c.num_labels, what);
  LOPPER_CHECK(c.hidden_size > 0 && c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0,
               "[bert config] ", what, ": hidden_size ", c.hidden_size, " must be a positive multiple of num_attention_heads ",
               c.num_attention_heads);
  LOPPER_CHECK(c.num_hidden_layers > 0 && c.intermediate_size > 0 && c.vocab_size > 0, "[bert config] ", what,
               ": num_hidden_layers, intermediate_size and vocab_size must be positive");
  // Values that would train without an error and give NaN or nonsense.
  LOPPER_CHECK(std::isfinite(c.layer_norm_eps) && c.layer_norm_eps > 0 && c.layer_norm_eps < 1, "[bert config] ", what,
               ": layer_norm_eps ", c.layer_norm_eps, " must be above 0 and below 1 (typically 1e-12)");
  for (auto [key, p] : {std::pair{"hidden_dropout_prob", c.hidden_dropout_prob},
                        std::pair{"attention_probs_dropout_prob", c.attention_probs_dropout_prob}})
    LOPPER_CHECK(std::isfinite(p) && p >= 0 && p < 1, "[bert config] ", what, ": ", key, " ", p, " must be in [0, 1)");
  LOPPER_CHECK(c.max_position_embeddings > 0 && c.type_vocab_size > 0, "[bert config] ", what,
               ": max_position_embeddings and type_vocab_size must be positive");
  LOPPER_CHECK(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size, "[bert config] ", what, ": pad_token_id ",
               c.pad_token_id, " is not a token of the vocabulary of ", c.vocab_size);
  if (j.contains("position_embedding_type") && j["position_embedding_type"] != "absolute")
    LOPPER_FAIL("[bert config] ", what, ": position_embedding_type ", j["position_embedding_type"].dump(),
                " is not supported (only \"absolute\")");
  if (j.contains("pruned_heads") && j["pruned_heads"].is_object()) {
    for (auto& [k, v] : j["pruned_heads"].items()) {
      int64_t layer = -1;
      try { layer = std::stoll(k); } catch (...) {}
      LOPPER_CHECK(layer >= 0 && layer < c.num_hidden_layers && v.is_array(), "[bert config] ", what,
                   ": pruned_heads entry '", k, "' must map a layer index to a list of heads");
      c.pruned_heads[layer] = v.get<std::vector<int64_t>>();
    }
  }
  c.heads_per_layer.assign(c.num_hidden_layers, c.num_attention_heads);
  for (auto& [layer, heads] : c.pruned_heads) c.heads_per_layer[layer] -= static_cast<int64_t>(heads.size());
  read(j, "lopper_heads_per_layer", c.heads_per_layer, what);
  c.intermediate_sizes.assign(c.num_hidden_layers, c.intermediate_size);
  read(j, "lopper_intermediate_sizes", c.intermediate_sizes, what);
  LOPPER_CHECK(static_cast<int64_t>(c.heads_per_layer.size()) == c.num_hidden_layers &&
                   static_cast<int64_t>(c.intermediate_sizes.size()) == c.num_hidden_layers,
               "[bert config] ", what, ": per-layer lists need ", c.num_hidden_layers, " entries");
  for (int64_t h : c.heads_per_layer)
    LOPPER_CHECK(h >= 0 && h <= c.num_attention_heads, "[bert config] ", what, ": a layer keeps ", h, " heads of ",
                 c.num_attention_heads);
  return c;
}

BertConfig BertConfig::from_file(const std::string& path) {
  std::ifstream f(path);
  LOPPER_CHECK(f.good(), "[bert config] cannot open '", path, "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    LOPPER_FAIL("[bert config] '", path, "' is not valid JSON: ", e.what());
  }
  return from_json(j, path);
}

nlohmann::json BertConfig::to_json() const {
  nlohmann::json j = original.is_object() ? original : nlohmann::json::object();
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = hidden_act;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["pad_token_id"] = pad_token_id;
  j["layer_norm_eps"] = layer_norm_eps;
  j["num_labels"] = num_labels;
  nlohmann::json ph = nlohmann::json::object();
  for (auto& [layer, heads] : pruned_heads) ph[std::to_string(layer)] = heads;
  j["pruned_heads"] = ph;
  bool uniform_ffn = true;
  for (int64_t s : intermediate_sizes) uniform_ffn = uniform_ffn && s == intermediate_size;
  j["lopper_heads_per_layer"] = heads_per_layer;
  if (!uniform_ffn) j["lopper_intermediate_sizes"] = intermediate_sizes;
  else j.erase("lopper_intermediate_sizes");
  return j;
}

void BertConfig::save(const std::string& path) const {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    LOPPER_CHECK(f.good(), "[bert config] cannot write '", tmp, "'");
    f << to_json().dump(2) << "\n";
    LOPPER_CHECK(f.good(), "[bert config] write to '", tmp, "' failed");
  }
  LOPPER_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "[bert config] cannot rename '", tmp, "' to '", path, "'");
}

}  // namespace lopper::nn
