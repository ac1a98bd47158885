// BERT with transformers' module tree and parameter names, so checkpoints load by name.
// The pruning hooks are plain Variable members that pruning/ sets, one per site: a weight
// mask on every Linear, a per-head mask, an attention-probability mask, an FFN-neuron mask.
// 0/1 masks and differentiable gates use the same hook, so gradients with respect to any
// mask exist. Nothing here knows a pruning method.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/bert_config.h"
#include "nn/layers.h"

namespace lopper::nn {

// Dropout's randomness for one forward; null means no dropout even in training mode.
struct ForwardContext {
  Generator* gen = nullptr;
};

class BertEmbeddings : public Module {
 public:
  BertEmbeddings(const BertConfig& c, Generator& init);
  // ids, token_types (B, T) -> (B, T, C)
  Variable forward(const Tensor& ids, const Tensor& token_types, const ForwardContext& ctx) const;
  std::shared_ptr<Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<LayerNorm> layer_norm;
  double dropout;
};

class BertSelfAttention : public Module {
 public:
  BertSelfAttention(const BertConfig& c, int64_t heads, Generator& init);
  // x (B, T, C), additive mask (B, 1, 1, T) -> context (B, T, heads * head_dim)
  Variable forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const;
  std::shared_ptr<Linear> query, key, value;
  int64_t heads, head_dim;
  double dropout;
  // Hooks, undefined = none. head_mask multiplies each head's context (0/1 masks and L0
  // gates alike); prob_mask multiplies the attention probabilities.
  Variable head_mask;  // (heads), or (B, heads): a mask per example
  Variable prob_mask;  // broadcastable to (B, heads, T, T)
  // Rewrites the probabilities in every forward from their values (nn/attention.h); a
  // function, since such a mask cannot exist before the forward that computes them.
  ProbHook prob_hook;
};

// dense (width -> hidden), dropout, residual, LayerNorm: both transformers' BertSelfOutput
// (after attention, width = heads * head_dim) and BertOutput (after the FFN).
class BertOutput : public Module {
 public:
  BertOutput(const BertConfig& c, int64_t width, Generator& init);
  Variable forward(const Variable& h, const Variable& residual, const ForwardContext& ctx) const;
  std::shared_ptr<Linear> dense;
  std::shared_ptr<LayerNorm> layer_norm;
  double dropout;
};

class BertAttention : public Module {
 public:
  BertAttention(const BertConfig& c, int64_t heads, Generator& init);
  Variable forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const;
  std::shared_ptr<BertSelfAttention> self;
  std::shared_ptr<BertOutput> output;  // transformers' BertSelfOutput: the same layers
};

class BertIntermediate : public Module {
 public:
  BertIntermediate(const BertConfig& c, int64_t width, Generator& init);
  Variable forward(const Variable& x) const;  // (B, T, C) -> (B, T, width)
  std::shared_ptr<Linear> dense;
  Activation act;
  // (width), or (B, 1, width) per example: multiplies the activation (0/1 masks and gates);
  // undefined = none
  Variable neuron_mask;
};

class BertLayer : public Module {
 public:
  BertLayer(const BertConfig& c, int64_t layer, Generator& init);
  Variable forward(const Variable& x, const Tensor& additive_mask, const ForwardContext& ctx) const;
  std::shared_ptr<BertAttention> attention;
  std::shared_ptr<BertIntermediate> intermediate;
  std::shared_ptr<BertOutput> output;
};

class BertEncoder : public Module {
 public:
  BertEncoder(const BertConfig& c, Generator& init);
  std::shared_ptr<ModuleList<BertLayer>> layer;  // encoder.layer.N
};

class BertPooler : public Module {
 public:
  BertPooler(const BertConfig& c, Generator& init);
  Variable forward(const Variable& hidden) const;  // tanh(dense(hidden[:, 0]))
  std::shared_ptr<Linear> dense;
};

struct BertOutputs {
  Variable last_hidden_state;           // (B, T, C)
  std::vector<Variable> hidden_states;  // embeddings, then each layer's output
  Variable pooled;                      // (B, C), undefined without a pooler
};

class BertModel : public Module {
 public:
  BertModel(const BertConfig& c, Generator& init, bool add_pooler = true);
  // ids (B, T) int, token_types (B, T) or undefined (zeros), attention_mask (B, T) 0/1 or
  // undefined (all ones).
  BertOutputs forward(const Tensor& ids, const Tensor& token_types, const Tensor& attention_mask,
                      const ForwardContext& ctx = {}) const;
  BertConfig config;
  std::shared_ptr<BertEmbeddings> embeddings;
  std::shared_ptr<BertEncoder> encoder;
  std::shared_ptr<BertPooler> pooler;  // null without a pooler
};

class BertForSequenceClassification : public Module {
 public:
  BertForSequenceClassification(const BertConfig& c, Generator& init);
  // logits (B, num_labels); hidden_states, when given, receives the embeddings' output and
  // each layer's, (B, T, C) each (for hidden-state distillation).
  Variable forward(const Tensor& ids, const Tensor& token_types, const Tensor& attention_mask,
                   const ForwardContext& ctx = {}, std::vector<Variable>* hidden_states = nullptr) const;
  // Cross-entropy, or MSE on logits (B, 1) when num_labels == 1 (regression).
  Variable loss(const Variable& logits, const Tensor& labels) const;
  // The encoder's config, which pruning keeps up to date: one config, not a copy.
  const BertConfig& config() const { return bert->config; }
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<Linear> classifier;
  double dropout;
};

class BertForQuestionAnswering : public Module {
 public:
  BertForQuestionAnswering(const BertConfig& c, Generator& init);
  // start and end logits, each (B, T)
  std::pair<Variable, Variable> forward(const Tensor& ids, const Tensor& token_types, const Tensor& attention_mask,
                                        const ForwardContext& ctx = {}) const;
  const BertConfig& config() const { return bert->config; }
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<Linear> qa_outputs;
};

// (B, T) 0/1 mask -> additive (B, 1, 1, T): 0 where kept, the dtype's lowest where masked,
// as transformers builds it.
Tensor additive_attention_mask(const Tensor& attention_mask, DType dtype);

// Reads model.safetensors from a Hugging Face folder into `model` by name: adds or strips
// the "bert." prefix as the checkpoint needs, maps old gamma/beta LayerNorm names, ignores
// buffers transformers ignores (position_ids). Throws on shape mismatches; returns the
// missing and unexpected keys (a fresh classifier head is reported as missing). Refuses a
// file with no tensors, or with a NaN or an infinity in any of them.
LoadReport load_pretrained(Module& model, const std::string& dir, bool model_has_bert_prefix);

// A task head's parameter ("classifier.*", "qa_outputs.*"): the only ones a fine-tuning run
// may start from scratch.
bool is_task_head(const std::string& name);
// Throws, naming what and the keys, unless every missing key of rep is a task head's.
void require_backbone(const LoadReport& rep, const std::string& what);

// Mean over unmasked tokens, then L2-normalized: sentence-transformers' embedding.
Tensor mean_pooled_embeddings(const Tensor& last_hidden_state, const Tensor& attention_mask);

}  // namespace lopper::nn
