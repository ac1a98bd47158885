// N:M sparsity on a BERT: the encoder Linears chosen by Hugging Face name patterns, the
// channel permutations that let N:M keep more magnitude (applied so that the network
// computes the same function), the masks, folded into the weights as zeros, and the masks
// kept so that fine-tuning holds those weights at zero. Not the patterns' math
// (pruning/nm.h) and not a PruningMethod: nothing here is trained.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/bert.h"
#include "pruning/compact.h"
#include "pruning/nm.h"

namespace lopper::pruning {

struct NmPruneOptions {
  NmPattern pattern;
  // Regular expressions searched in the Linears' Hugging Face names
  // ("bert.encoder.layer.3.output.dense"); empty: every encoder Linear. Embeddings, pooler
  // and classifier are never pruned.
  std::vector<std::string> modules;
  double dense_fraction = 0;  // the first round(fraction x layers) layers stay dense
  bool permute = false;       // search and apply channel permutations first (1d patterns)
};

// An encoder Linear of a model of config c: its Hugging Face name and weight shape.
struct EncoderLinear {
  std::string name;  // "bert.encoder.layer.3.output.dense"
  int64_t layer;
  LayerLinear which;
  Shape shape;  // (out, in)
};
std::vector<EncoderLinear> encoder_linears(const nn::BertConfig& c);
// Those o selects, in model order. Throws naming the key: "modules[i]: '...' matches no
// encoder Linear", "vector: 4x1 units do not tile bert.encoder...'s (384, 1536) weight", ...
std::vector<EncoderLinear> select_linears(const nn::BertConfig& c, const NmPruneOptions& o);

// Weights held at zero: parameter name ("bert.encoder.layer.0.attention.self.query.weight")
// -> 0/1 mask of the weight's shape (f32).
using HeldMasks = std::map<std::string, Tensor>;

// Permutes (if o.permute), computes the masks and multiplies them into the weights.
// hidden_readers: the task head's Linears that read hidden states directly (a classifier
// without a pooler), permuted with the residual stream. The report holds, per Linear, the
// share of |W| kept and, with permute, that share without permutation.
struct NmPruneResult {
  HeldMasks masks;
  nlohmann::json report;
};
NmPruneResult nm_prune(nn::BertModel& model, const std::vector<nn::Linear*>& hidden_readers, const NmPruneOptions& o);

// The permutations, each a function-preserving reordering of channels (perm[k]: the
// original channel now at k). Residual stream (hidden, H): embeddings, every LayerNorm,
// the rows of the attention and FFN output projections, the columns of every Linear that
// reads hidden states. FFN of a layer (I): intermediate rows and bias, output columns.
// Attention of a layer (heads x head_dim): value rows and bias, output columns; perm may
// only move channels inside their head.
void permute_hidden(nn::BertModel& model, const std::vector<nn::Linear*>& hidden_readers,
                    const std::vector<int64_t>& perm);
void permute_ffn(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& perm);
void permute_attention_values(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& perm);

// A pattern as config.json's lopper_sparsity and summary.json write it, and back: {"pattern":
// "1d" | "2d" | "unstructured", "n", "m" (or "density"), "unit": [rows, cols], "select"}.
nlohmann::json pattern_json(const NmPattern& p);
NmPattern pattern_from_json(const nlohmann::json& j);

// Multiplies each held mask into its parameter's gradient: an optimizer then never moves a
// pruned weight (AdamW's moments for it stay zero, and so does its decay).
void mask_gradients(const std::vector<std::pair<Variable, Tensor>>& held);

}  // namespace lopper::pruning
