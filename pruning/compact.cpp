// Slicing weights for real.
#include "pruning/compact.h"

#include <algorithm>
#include <set>

#include "core/ops.h"

namespace lopper::pruning {

const char* layer_linear_path(LayerLinear x) {
  switch (x) {
    case LayerLinear::query: return "attention.self.query";
    case LayerLinear::key: return "attention.self.key";
    case LayerLinear::value: return "attention.self.value";
    case LayerLinear::attention_output: return "attention.output.dense";
    case LayerLinear::intermediate: return "intermediate.dense";
    case LayerLinear::output: return "output.dense";
  }
  return "?";
}

nn::Linear& layer_linear(nn::BertModel& m, int64_t layer, LayerLinear x) {
  nn::BertLayer& L = (*m.encoder->layer)[layer];
  switch (x) {
    case LayerLinear::query: return *L.attention->self->query;
    case LayerLinear::key: return *L.attention->self->key;
    case LayerLinear::value: return *L.attention->self->value;
    case LayerLinear::attention_output: return *L.attention->output->dense;
    case LayerLinear::intermediate: return *L.intermediate->dense;
    case LayerLinear::output: return *L.output->dense;
  }
  LOPPER_FAIL("[layer_linear] unknown Linear");
}

Tensor take(const Tensor& t, int64_t dim, const std::vector<int64_t>& idx) {
  return index_select(t, dim, Tensor::from_vector(idx, {static_cast<int64_t>(idx.size())}, t.device())).contiguous();
}

void remove_heads(nn::BertModel& model, const std::map<int64_t, std::vector<int64_t>>& heads, bool allow_empty) {
  nn::BertConfig& cfg = model.config;
  for (auto& [layer, drop] : heads) {
    LOPPER_CHECK(layer >= 0 && layer < cfg.num_hidden_layers, "[remove_heads] layer ", layer, " of ", cfg.num_hidden_layers);
    nn::BertLayer& L = (*model.encoder->layer)[static_cast<size_t>(layer)];
    nn::BertSelfAttention& att = *L.attention->self;
    std::set<int64_t> gone(drop.begin(), drop.end());
    for (int64_t h : gone)
      LOPPER_CHECK(h >= 0 && h < att.heads, "[remove_heads] layer ", layer, " has ", att.heads, " heads, cannot remove ", h);
    std::vector<int64_t> keep_heads, keep_rows;
    for (int64_t h = 0; h < att.heads; ++h) {
      if (gone.count(h)) continue;
      keep_heads.push_back(h);
      for (int64_t r = 0; r < att.head_dim; ++r) keep_rows.push_back(h * att.head_dim + r);
    }
    LOPPER_CHECK(!keep_heads.empty() || allow_empty, "[remove_heads] removing every head of layer ", layer,
                 " needs allow_empty_layers");
    // Original indices of the removed heads, for transformers' pruned_heads.
    std::vector<int64_t> original;
    {
      std::set<int64_t> already(cfg.pruned_heads[layer].begin(), cfg.pruned_heads[layer].end());
      std::vector<int64_t> alive;
      for (int64_t h = 0; h < cfg.num_attention_heads; ++h)
        if (!already.count(h)) alive.push_back(h);
      for (int64_t h : gone) already.insert(alive.at(static_cast<size_t>(h)));
      original.assign(already.begin(), already.end());
    }
    nn::Linear& out = *L.attention->output->dense;
    for (nn::Linear* lin : {att.query.get(), att.key.get(), att.value.get(), &out})
      LOPPER_CHECK(!lin->weight_mask.defined(), "[remove_heads] layer ", layer, " carries a weight mask: fold it into the ",
                   "weights (or detach it) before removing heads");
    LOPPER_CHECK(!att.prob_hook, "[remove_heads] layer ", layer, " carries an attention-probability hook, which knows ",
                 "its heads: detach it before removing heads");
    for (nn::Linear* lin : {att.query.get(), att.key.get(), att.value.get()}) {
      lin->weight.mutable_data() = take(lin->weight.data(), 0, keep_rows);
      lin->bias.mutable_data() = take(lin->bias.data(), 0, keep_rows);
    }
    out.weight.mutable_data() = take(out.weight.data(), 1, keep_rows);
    // A mask on the kept heads stays (as constants); a probability mask has the old head count.
    if (att.head_mask.defined()) att.head_mask = Variable(take(att.head_mask.data(), 0, keep_heads));
    att.prob_mask = Variable();
    att.heads = static_cast<int64_t>(keep_heads.size());
    cfg.heads_per_layer[layer] = att.heads;
    cfg.pruned_heads[layer] = original;
    for (nn::Linear* lin : {att.query.get(), att.key.get(), att.value.get(), &out}) {
      lin->weight.zero_grad();
      lin->bias.zero_grad();
    }
  }
}

void keep_neurons(nn::BertModel& model, int64_t layer, const std::vector<int64_t>& keep) {
  nn::BertConfig& cfg = model.config;
  LOPPER_CHECK(layer >= 0 && layer < cfg.num_hidden_layers, "[keep_neurons] layer ", layer, " of ", cfg.num_hidden_layers);
  nn::BertLayer& L = (*model.encoder->layer)[static_cast<size_t>(layer)];
  int64_t width = L.intermediate->dense->weight.size(0);
  for (int64_t i : keep) LOPPER_CHECK(i >= 0 && i < width, "[keep_neurons] neuron ", i, " outside width ", width);
  nn::Linear& in = *L.intermediate->dense;
  nn::Linear& out = *L.output->dense;
  for (nn::Linear* lin : {&in, &out})
    LOPPER_CHECK(!lin->weight_mask.defined(), "[keep_neurons] layer ", layer, " carries a weight mask: fold it into the ",
                 "weights (or detach it) before removing neurons");
  in.weight.mutable_data() = take(in.weight.data(), 0, keep);
  in.bias.mutable_data() = take(in.bias.data(), 0, keep);
  out.weight.mutable_data() = take(out.weight.data(), 1, keep);
  if (L.intermediate->neuron_mask.defined())
    L.intermediate->neuron_mask = Variable(take(L.intermediate->neuron_mask.data(), 0, keep));
  for (nn::Linear* lin : {&in, &out}) {
    lin->weight.zero_grad();
    lin->bias.zero_grad();
  }
  cfg.intermediate_sizes[layer] = static_cast<int64_t>(keep.size());
}

void fold_into_columns(nn::Linear& lin, const std::vector<double>& g, int64_t group) {
  std::vector<float> scale;  // (in)
  for (double v : g) scale.insert(scale.end(), static_cast<size_t>(group), static_cast<float>(v));
  if (scale.empty()) return;
  LOPPER_CHECK(static_cast<int64_t>(scale.size()) == lin.weight.size(1), "[fold] ", scale.size(), " masked inputs for a ",
               "weight with ", lin.weight.size(1), " columns");
  Tensor s = Tensor::from_vector(scale, {1, static_cast<int64_t>(scale.size())}, lin.weight.device());
  lin.weight.mutable_data() = mul(lin.weight.data(), s).contiguous();
}

double flops_per_head(const nn::BertConfig& c, int64_t t) {
  double hidden = static_cast<double>(c.hidden_size), d = static_cast<double>(c.head_dim()), n = static_cast<double>(t);
  return 2 * n * hidden * 3 * d   // Q, K, V
         + 2 * 2 * n * n * d      // scores and context
         + 2 * n * d * hidden;    // output projection
}

double flops_per_neuron(const nn::BertConfig& c, int64_t t) {
  return 2 * 2 * static_cast<double>(t) * static_cast<double>(c.hidden_size);  // in and out
}

std::vector<LayerFlops> bert_flops(const nn::BertConfig& c, int64_t t) {
  std::vector<LayerFlops> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    out.push_back({static_cast<double>(c.heads_per_layer[l]) * flops_per_head(c, t),
                   static_cast<double>(c.intermediate_sizes[l]) * flops_per_neuron(c, t)});
  return out;
}

double total_flops(const std::vector<LayerFlops>& f) {
  double s = 0;
  for (auto& l : f) s += l.attention + l.ffn;
  return s;
}

}  // namespace lopper::pruning
