// BERT forward passes, written to match transformers' modeling_bert op for op.
#include "nn/bert.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "nn/attention.h"
#include "nn/losses.h"
#include "nn/safetensors.h"

namespace lopper::nn {

namespace {
Variable maybe_dropout(const Variable& x, double p, const Module& m, const ForwardContext& ctx) {
  if (!ctx.gen) return x;
  return ag::dropout(x, p, m.is_training(), *ctx.gen);
}
}  // namespace

BertEmbeddings::BertEmbeddings(const BertConfig& c, Generator& init) : dropout(c.hidden_dropout_prob) {
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size, init));
  position_embeddings =
      register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size, init));
  token_type_embeddings =
      register_module("token_type_embeddings", std::make_shared<Embedding>(c.type_vocab_size, c.hidden_size, init));
  layer_norm = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

Variable BertEmbeddings::forward(const Tensor& ids, const Tensor& token_types, const ForwardContext& ctx) const {
  int64_t t = ids.size(1);
  LOPPER_CHECK(t <= position_embeddings->weight.size(0), "[bert] sequence of ", t, " tokens is longer than ",
               "max_position_embeddings ", position_embeddings->weight.size(0));
  Tensor types = token_types.defined() ? token_types : Tensor::zeros(ids.shape(), DType::i64, ids.device());
  Variable x = ag::add(word_embeddings->forward(ids), token_type_embeddings->forward(types));
  x = ag::add(x, position_embeddings->forward(Tensor::arange(t, DType::i64, ids.device())));
  return maybe_dropout(layer_norm->forward(x), dropout, *this, ctx);
}

BertSelfAttention::BertSelfAttention(const BertConfig& c, int64_t heads, Generator& init)
    : heads(heads), head_dim(c.head_dim()), dropout(c.attention_probs_dropout_prob) {
  int64_t width = heads * head_dim;
  query = register_module("query", std::make_shared<Linear>(c.hidden_size, width, init));
  key = register_module("key", std::make_shared<Linear>(c.hidden_size, width, init));
  value = register_module("value", std::make_shared<Linear>(c.hidden_size, width, init));
}

Variable BertSelfAttention::forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const {
  // A layer whose heads were all removed contributes nothing but the output bias.
  if (heads == 0) return Variable(Tensor::zeros({x.size(0), x.size(1), 0}, x.dtype(), x.device()));
  Variable q = split_heads(query->forward(x), heads);  // (B, H, T, D)
  Variable k = split_heads(key->forward(x), heads);
  Variable v = split_heads(value->forward(x), heads);
  Generator* drop = is_training() ? ctx.gen : nullptr;
  Variable context = scaled_dot_product_attention(q, k, v, additive_mask, prob_mask, dropout, drop, prob_hook);  // (B, H, T, D)
  // (heads): one mask for the batch; (B, heads): one per example, whose gradients are then
  // per example (Fisher information in pruning/fisher).
  if (head_mask.defined())
    context = ag::mul(context, head_mask.dim() == 2 ? ag::reshape(head_mask, {head_mask.size(0), heads, 1, 1})
                                                    : ag::reshape(head_mask, {heads, 1, 1}));
  return merge_heads(context);  // (B, T, H * D)
}

BertAttention::BertAttention(const BertConfig& c, int64_t heads, Generator& init) {
  self = register_module("self", std::make_shared<BertSelfAttention>(c, heads, init));
  output = register_module("output", std::make_shared<BertOutput>(c, heads * c.head_dim(), init));
}

Variable BertAttention::forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const {
  return output->forward(self->forward(x, additive_mask, ctx), x, ctx);
}

BertIntermediate::BertIntermediate(const BertConfig& c, int64_t width, Generator& init)
    : act(activation_from_name(c.hidden_act)) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, width, init));
}

Variable BertIntermediate::forward(const Variable& x) const {
  Variable h = dense->forward(x, unary_op(act));
  if (neuron_mask.defined()) h = ag::mul(h, neuron_mask);
  return h;
}

BertOutput::BertOutput(const BertConfig& c, int64_t width, Generator& init) : dropout(c.hidden_dropout_prob) {
  dense = register_module("dense", std::make_shared<Linear>(width, c.hidden_size, init));
  layer_norm = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

Variable BertOutput::forward(const Variable& h, const Variable& residual, const ForwardContext& ctx) const {
  return layer_norm->forward(ag::add(maybe_dropout(dense->forward(h), dropout, *this, ctx), residual));
}

BertLayer::BertLayer(const BertConfig& c, int64_t layer, Generator& init) {
  attention = register_module("attention", std::make_shared<BertAttention>(c, c.heads_per_layer.at(layer), init));
  intermediate = register_module("intermediate", std::make_shared<BertIntermediate>(c, c.intermediate_sizes.at(layer), init));
  output = register_module("output", std::make_shared<BertOutput>(c, c.intermediate_sizes.at(layer), init));
}

Variable BertLayer::forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const {
  Variable a = attention->forward(x, additive_mask, ctx);
  return output->forward(intermediate->forward(a), a, ctx);
}

BertEncoder::BertEncoder(const BertConfig& c, Generator& init) {
  layer = register_module("layer", std::make_shared<ModuleList<BertLayer>>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(std::make_shared<BertLayer>(c, i, init));
}

BertPooler::BertPooler(const BertConfig& c, Generator& init) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, init));
}

Variable BertPooler::forward(const Variable& hidden) const {
  return ag::tanh(dense->forward(ag::select(hidden, 1, 0)));
}

Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype) {
  LOPPER_CHECK(attention_mask.dim() == 2, "[bert] attention_mask must be (B, T), got ", shape_str(attention_mask.shape()));
  double lowest = dtype == DType::f64 ? std::numeric_limits<double>::lowest() : std::numeric_limits<float>::lowest();
  Tensor m = attention_mask.to(dtype);
  // (1 - m) * lowest
  Tensor add = scale(add_scalar(neg(m), 1.0), lowest);
  return add.view({m.size(0), 1, 1, m.size(1)});
}

BertModel::BertModel(const BertConfig& c, Generator& init, bool add_pooler) : config(c) {
  embeddings = register_module("embeddings", std::make_shared<BertEmbeddings>(c, init));
  encoder = register_module("encoder", std::make_shared<BertEncoder>(c, init));
  if (add_pooler) pooler = register_module("pooler", std::make_shared<BertPooler>(c, init));
}

BertOutputs BertModel::forward(const Tensor& ids, const Tensor& token_types, const Tensor& attention_mask,
                               const ForwardContext& ctx) const {
  LOPPER_CHECK(ids.dim() == 2, "[bert] input_ids must be (B, T), got ", shape_str(ids.shape()));
  LOPPER_CHECK(!token_types.defined() || token_types.shape() == ids.shape(), "[bert] token_type_ids ",
               shape_str(token_types.shape()), " vs input_ids ", shape_str(ids.shape()));
  LOPPER_CHECK(!attention_mask.defined() || attention_mask.shape() == ids.shape(), "[bert] attention_mask ",
               shape_str(attention_mask.shape()), " vs input_ids ", shape_str(ids.shape()));
  BertOutputs out;
  Variable h = embeddings->forward(ids, token_types, ctx);
  DType dt = h.dtype();
  Tensor mask = attention_mask.defined() ? additive_attention_mask(attention_mask, dt) : Tensor();
  out.hidden_states.push_back(h);
  for (const auto& layer : *encoder->layer) {
    h = layer->forward(h, mask, ctx);
    out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  if (pooler) out.pooled = pooler->forward(h);
  return out;
}

BertForSequenceClassification::BertForSequenceClassification(const BertConfig& c, Generator& init)
    : dropout(c.hidden_dropout_prob) {
  LOPPER_CHECK(c.num_labels >= 1, "[bert] num_labels must be >= 1, got ", c.num_labels);
  bert = register_module("bert", std::make_shared<BertModel>(c, init, true));
  classifier = register_module("classifier", std::make_shared<Linear>(c.hidden_size, c.num_labels, init));
}

Variable BertForSequenceClassification::forward(const Tensor& ids, const Tensor& token_types,
                                                const Tensor& attention_mask, const ForwardContext& ctx,
                                                std::vector<Variable>* hidden_states) const {
  BertOutputs o = bert->forward(ids, token_types, attention_mask, ctx);
  if (hidden_states) *hidden_states = std::move(o.hidden_states);
  return classifier->forward(maybe_dropout(o.pooled, dropout, *this, ctx));
}

Variable BertForSequenceClassification::loss(const Variable& logits, const Tensor& labels) const {
  if (config().num_labels == 1) {
    Tensor target = labels.to(logits.dtype()).reshape({-1, 1});
    return mse(logits, Variable(target));
  }
  return cross_entropy(logits, labels.to(DType::i64));
}

BertForQuestionAnswering::BertForQuestionAnswering(const BertConfig& c, Generator& init) {
  bert = register_module("bert", std::make_shared<BertModel>(c, init, false));
  qa_outputs = register_module("qa_outputs", std::make_shared<Linear>(c.hidden_size, 2, init));
}

std::pair<Variable, Variable> BertForQuestionAnswering::forward(const Tensor& ids, const Tensor& token_types,
                                                                const Tensor& attention_mask,
                                                                const ForwardContext& ctx) const {
  Variable logits = qa_outputs->forward(bert->forward(ids, token_types, attention_mask, ctx).last_hidden_state);
  return {ag::contiguous(ag::select(logits, 2, 0)), ag::contiguous(ag::select(logits, 2, 1))};
}

bool is_task_head(const std::string& name) {
  return name.rfind("classifier.", 0) == 0 || name.rfind("qa_outputs.", 0) == 0;
}

void require_backbone(const LoadReport& rep, const std::string& what) {
  std::vector<std::string> absent;
  for (const std::string& k : rep.missing)
    if (!is_task_head(k)) absent.push_back(k);
  if (absent.empty()) return;
  std::string list;
  for (size_t i = 0; i < absent.size() && i < 4; ++i) list += (i ? ", " : "") + absent[i];
  if (absent.size() > 4) list += ", ... (" + std::to_string(absent.size() - 4) + " more)";
  LOPPER_FAIL(what, ": the checkpoint lacks ", absent.size(), " weight(s) that its config needs: ", list,
              "; only the task head (classifier.*) may be new");
}

LoadReport load_pretrained(Module& model, const std::string& dir, bool model_has_bert_prefix) {
  namespace fs = std::filesystem;
  fs::path st = fs::path(dir) / "model.safetensors";
  if (!fs::exists(st)) {
    bool bin = fs::exists(fs::path(dir) / "pytorch_model.bin");
    LOPPER_FAIL("[bert] no model.safetensors in '", dir, "'",
                bin ? ": pytorch_model.bin (a pickle) is not read by Lopper; convert it once with "
                      "python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR')"
                      ".save_pretrained('DIR', safe_serialization=True)\""
                    : "");
  }
  StateDict file = load_safetensors(st.string()).tensors;
  LOPPER_CHECK(!file.empty(), "[bert] '", st.string(), "' holds no tensors");
  check_finite(file, "[bert] '" + st.string() + "'");
  bool file_has_prefix = false;
  for (auto& [k, v] : file) file_has_prefix = file_has_prefix || k.rfind("bert.", 0) == 0;
  StateDict mapped;
  for (auto& [k0, v] : file) {
    std::string k = k0;
    if (k.ends_with("position_ids")) continue;  // a buffer transformers ignores on load
    for (auto [from, to] : {std::pair{".gamma", ".weight"}, std::pair{".beta", ".bias"}})
      if (k.ends_with(from)) k = k.substr(0, k.size() - std::string(from).size()) + to;
    if (model_has_bert_prefix && !file_has_prefix) {
      bool head = k.rfind("cls.", 0) == 0 || k.rfind("classifier.", 0) == 0 || k.rfind("qa_outputs.", 0) == 0;
      if (!head) k = "bert." + k;
    } else if (!model_has_bert_prefix && file_has_prefix) {
      if (k.rfind("bert.", 0) != 0) continue;  // task heads have no place in a bare BertModel
      k = k.substr(5);
    }
    mapped[k] = v;
  }
  // A task head trained for another label count (its first dimension) is dropped and
  // re-initialized, as transformers' ignore_mismatched_sizes does for heads; any other
  // mismatch, in a head's input width or anywhere else, is an error.
  std::vector<std::string> resized;
  for (auto& [name, p] : model.named_parameters()) {
    auto it = mapped.find(name);
    if (!is_task_head(name) || it == mapped.end() || it->second.shape() == p.shape()) continue;
    const Shape &f = it->second.shape(), &m = p.shape();
    bool other_labels = f.size() == m.size() && !f.empty() && f[0] != m[0] && std::equal(f.begin() + 1, f.end(), m.begin() + 1);
    LOPPER_CHECK(other_labels, "[bert] '", st.string(), "': ", name, " is ", shape_str(f), ", the config needs ", shape_str(m),
                 " (a task head may differ in its label count only)");
    mapped.erase(it);
    resized.push_back(name);
  }
  LoadReport rep = model.load_state_dict(mapped, false);
  rep.resized = resized;
  return rep;
}

Tensor mean_pooled_embeddings(const Tensor& last_hidden_state, const Tensor& attention_mask) {
  Tensor m = attention_mask.to(last_hidden_state.dtype()).unsqueeze(-1);  // (B, T, 1)
  Tensor summed = sum(mul(last_hidden_state, m), 1);                      // (B, C)
  Tensor counts = clamp(sum(m, 1), 1e-9, 1e30);                            // (B, 1)
  Tensor mean = div(summed, counts);
  Tensor norm = clamp(sqrt(sum(square(mean), 1, true)), 1e-12, 1e30);
  return div(mean, norm);
}

}  // namespace lopper::nn
