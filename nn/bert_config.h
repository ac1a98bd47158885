// BertConfig: Hugging Face's config.json for BERT, plus what its format cannot say about a
// pruned model: per-layer head counts and FFN sizes, kept in the extra keys
// "lopper_heads_per_layer" and "lopper_intermediate_sizes" (docs/bert.md).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lopper::nn {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  int64_t num_labels = 2;
  // transformers' pruned_heads: layer -> heads removed (original indices).
  std::map<int64_t, std::vector<int64_t>> pruned_heads;
  // Per layer: heads kept and FFN width. Derived from the fields above unless the
  // lopper_* keys give them.
  std::vector<int64_t> heads_per_layer;
  std::vector<int64_t> intermediate_sizes;
  nlohmann::json original;  // the file as read, so unknown keys survive a round trip

  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  // Throws lopper::Error naming the file and key on a missing or malformed field.
  static BertConfig from_json(const nlohmann::json& j, const std::string& what = "config.json");
  static BertConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
  void save(const std::string& path) const;  // atomically
};

}  // namespace lopper::nn
