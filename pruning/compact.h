// Physical removal of what was pruned: attention heads (rows of query/key/value, columns
// of the attention output projection) and FFN neurons (rows of the intermediate dense,
// columns of the output dense), giving a smaller dense model whose outputs equal the masked
// model's. Also the FLOPs model used in summaries. Not a mask: after this the weights are gone.
#pragma once
#include <map>
#include <vector>

#include "nn/bert.h"

namespace lopper::pruning {

// The six Linears of an encoder layer, by their path inside the layer.
enum class LayerLinear { query, key, value, attention_output, intermediate, output };
inline constexpr LayerLinear kLayerLinears[] = {LayerLinear::query,          LayerLinear::key,
                                                LayerLinear::value,          LayerLinear::attention_output,
                                                LayerLinear::intermediate,   LayerLinear::output};
const char* layer_linear_path(LayerLinear x);  // "attention.self.query", ..., "output.dense"
nn::Linear& layer_linear(nn::BertModel& m, int64_t layer, LayerLinear x);

// The entries idx of t along dim, contiguous: what removal keeps, or a permutation.
Tensor take(const Tensor& t, int64_t dim, const std::vector<int64_t>& idx);

// Removes heads (indices into the layer's current heads) from each listed layer. A layer
// may lose all its heads only with allow_empty: its attention block then adds nothing
// but its output bias before the residual and LayerNorm. Updates the model's config
// (pruned_heads in original head indices, heads_per_layer) and clears head hooks.
void remove_heads(nn::BertModel& model, const std::map<int64_t, std::vector<int64_t>>& heads, bool allow_empty = false);

// Keeps only the listed FFN neurons of a layer (indices into its current width).
void keep_neurons(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& keep);

// Scales columns [i * group, (i + 1) * group) of a Linear's weight (out, in) by g[i]: a mask
// or gate on the Linear's input folded into its weight.
void fold_into_columns(nn::Linear& lin, const std::vector<double>& g, int64_t group);

struct LayerFlops {
  double attention = 0;  // Q, K, V and output projections, scores and context
  double ffn = 0;
};
// Multiply-adds x 2 per layer for one sequence of `seq_len` tokens.
std::vector<LayerFlops> bert_flops(const nn::BertConfig& c, int64_t seq_len);
double total_flops(const std::vector<LayerFlops>& f);
// What one head (Q, K, V rows, scores, context, output columns) and one FFN neuron cost, in
// the same FLOPs: bert_flops is these times the heads and neurons of each layer.
double flops_per_head(const nn::BertConfig& c, int64_t seq_len);
double flops_per_neuron(const nn::BertConfig& c, int64_t seq_len);

}  // namespace lopper::pruning
