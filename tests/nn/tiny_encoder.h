// A tiny post-LN transformer encoder assembled from Lopper's parts, for the end-to-end
// learning test and the allocator-growth test. Not BERT: no pooler, no token types.
#pragma once
#include <memory>

#include "nn/attention.h"
#include "nn/layers.h"

namespace lopper::test_models {

struct TinyLayer : nn::Module {
  TinyLayer(int64_t d, int64_t heads, Generator& g)
      : heads(heads),
        qkv(register_module("qkv", std::make_shared<nn::Linear>(d, 3 * d, g))),
        out(register_module("out", std::make_shared<nn::Linear>(d, d, g))),
        ln1(register_module("ln1", std::make_shared<nn::LayerNorm>(d, 1e-5))),
        ff1(register_module("ff1", std::make_shared<nn::Linear>(d, 4 * d, g))),
        ff2(register_module("ff2", std::make_shared<nn::Linear>(4 * d, d, g))),
        ln2(register_module("ln2", std::make_shared<nn::LayerNorm>(d, 1e-5))) {}

  Variable forward(const Variable& x) const {  // (B, T, d)
    int64_t d = x.size(-1);
    Variable h = qkv->forward(x);  // (B, T, 3d)
    Variable q = nn::split_heads(ag::slice(h, 2, 0, d), heads);
    Variable k = nn::split_heads(ag::slice(h, 2, d, 2 * d), heads);
    Variable v = nn::split_heads(ag::slice(h, 2, 2 * d, 3 * d), heads);
    Variable a = nn::merge_heads(nn::scaled_dot_product_attention(q, k, v, Tensor()));
    Variable x1 = ln1->forward(ag::add(x, out->forward(a)));
    return ln2->forward(ag::add(x1, ff2->forward(ag::gelu(ff1->forward(x1)))));
  }

  int64_t heads;
  std::shared_ptr<nn::Linear> qkv, out;
  std::shared_ptr<nn::LayerNorm> ln1;
  std::shared_ptr<nn::Linear> ff1, ff2;
  std::shared_ptr<nn::LayerNorm> ln2;
};

struct TinyEncoder : nn::Module {
  TinyEncoder(int64_t vocab, int64_t seq, int64_t d, int64_t heads, int64_t layers, Generator& g)
      : tok(register_module("tok", std::make_shared<nn::Embedding>(vocab, d, g, 0.5))),
        pos(register_module("pos", std::make_shared<nn::Embedding>(seq, d, g, 0.5))),
        blocks(register_module("layers", std::make_shared<nn::ModuleList<TinyLayer>>())),
        head(register_module("head", std::make_shared<nn::Linear>(d, vocab, g))) {
    for (int64_t i = 0; i < layers; ++i) blocks->push_back(std::make_shared<TinyLayer>(d, heads, g));
  }

  Variable forward(const Tensor& ids) const {  // (B, T) -> logits (B, T, vocab)
    int64_t t = ids.size(1);
    Variable x = ag::add(tok->forward(ids), pos->forward(Tensor::arange(t, DType::i64)));
    for (const auto& b : *blocks) x = b->forward(x);
    return head->forward(x);
  }

  std::shared_ptr<nn::Embedding> tok, pos;
  std::shared_ptr<nn::ModuleList<TinyLayer>> blocks;
  std::shared_ptr<nn::Linear> head;
};

}  // namespace lopper::test_models
