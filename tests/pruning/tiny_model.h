// The tiny random BERT of tests/fixtures/tiny_bert (hidden 32, 4 heads of 8, FFN 64, 2
// layers) with a classifier, in eval mode, and the fixture's reference batch.
#pragma once
#include <string>

#include "autograd/variable.h"
#include "nn/bert.h"
#include "nn/safetensors.h"

namespace lopper {
inline const std::string kTiny = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tiny_bert";

struct Loaded {
  Loaded() : cfg(nn::BertConfig::from_file(kTiny + "/config.json")), init(0), model(cfg, init) {
    nn::load_pretrained(model, kTiny, true);
    model.eval();
    ref = nn::load_safetensors(kTiny + "/reference.safetensors").tensors;
  }
  Tensor logits() const {
    NoGradGuard ng;
    return model.forward(ref.at("input_ids"), ref.at("token_type_ids"), ref.at("attention_mask")).data();
  }
  // The same forward recording gradients: the training attention, bitwise the unfused ops
  // that a forward with a probability hook or mask runs, so the two compare bit for bit
  // (logits() takes the inference attention, equal to them only to rounding at short
  // sequences).
  Tensor logits_unfused() const {
    return model.forward(ref.at("input_ids"), ref.at("token_type_ids"), ref.at("attention_mask")).data();
  }
  nn::BertConfig cfg;
  Generator init;
  nn::BertForSequenceClassification model;
  nn::StateDict ref;
};

}  // namespace lopper
