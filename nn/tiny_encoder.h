// A tiny post-LN transformer encoder assembled from Lopper's parts: the engine's
// end-to-end test (learn to sort digits), the allocator-growth test, and the example that
// apps/train_tiny runs. Not BERT (nn/bert is): no pooler, token types or HF names.
#pragma once
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "nn/attention.h"
#include "nn/layers.h"

namespace lopper::nn {

struct TinyLayer : Module {
  TinyLayer(int64_t d, int64_t heads, Generator& g)
      : heads(heads),
        qkv(register_module("qkv", std::make_shared<Linear>(d, 3 * d, g))),
        out(register_module("out", std::make_shared<Linear>(d, d, g))),
        ln1(register_module("ln1", std::make_shared<LayerNorm>(d, 1e-5))),
        ff1(register_module("ff1", std::make_shared<Linear>(d, 4 * d, g))),
        ff2(register_module("ff2", std::make_shared<Linear>(4 * d, d, g))),
        ln2(register_module("ln2", std::make_shared<LayerNorm>(d, 1e-5))) {}

  Variable forward(const Variable& x) const {  // (B, T, d)
    int64_t d = x.size(-1);
    Variable h = qkv->forward(x);  // (B, T, 3d)
    Variable q = split_heads(ag::slice(h, 2, 0, d), heads);
    Variable k = split_heads(ag::slice(h, 2, d, 2 * d), heads);
    Variable v = split_heads(ag::slice(h, 2, 2 * d, 3 * d), heads);
    Variable a = merge_heads(scaled_dot_product_attention(q, k, v, Tensor()));
    Variable x1 = ln1->forward(ag::add(x, out->forward(a)));
    return ln2->forward(ag::add(x1, ff2->forward(ag::gelu(ff1->forward(x1)))));
  }

  int64_t heads;
  std::shared_ptr<Linear> qkv, out;
  std::shared_ptr<LayerNorm> ln1;
  std::shared_ptr<Linear> ff1, ff2;
  std::shared_ptr<LayerNorm> ln2;
};

struct TinyEncoder : Module {
  TinyEncoder(int64_t vocab, int64_t seq, int64_t d, int64_t heads, int64_t layers, Generator& g)
      : tok(register_module("tok", std::make_shared<Embedding>(vocab, d, g, 0.5))),
        pos(register_module("pos", std::make_shared<Embedding>(seq, d, g, 0.5))),
        blocks(register_module("layers", std::make_shared<ModuleList<TinyLayer>>())),
        head(register_module("head", std::make_shared<Linear>(d, vocab, g))) {
    for (int64_t i = 0; i < layers; ++i) blocks->push_back(std::make_shared<TinyLayer>(d, heads, g));
  }

  Variable forward(const Tensor& ids) const {  // (B, T) -> logits (B, T, vocab)
    int64_t t = ids.size(1);
    Variable x = ag::add(tok->forward(ids), pos->forward(Tensor::arange(t, DType::i64)));
    for (const auto& b : *blocks) x = b->forward(x);
    return head->forward(x);
  }

  std::shared_ptr<Embedding> tok, pos;
  std::shared_ptr<ModuleList<TinyLayer>> blocks;
  std::shared_ptr<Linear> head;
};

// The example task: random digit sequences (B, T) and their sorted versions flattened to
// (B * T), both i64.
inline std::pair<Tensor, Tensor> sort_digits_batch(int64_t batch, int64_t seq, int64_t vocab, Generator& g) {
  std::vector<int64_t> x(batch * seq), y(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i) x[i] = static_cast<int64_t>(g.next_below(vocab));
  y = x;
  for (int64_t i = 0; i < batch; ++i) std::sort(y.begin() + i * seq, y.begin() + (i + 1) * seq);
  return {Tensor::from_vector(x, {batch, seq}), Tensor::from_vector(y, {batch * seq})};
}

}  // namespace lopper::nn
