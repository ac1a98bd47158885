// Basic layers.
#include "nn/layers.h"

namespace lopper::nn {

Linear::Linear(int64_t in, int64_t out, Generator& gen, bool has_bias, double init_std) {
  weight = register_parameter("weight", normal({out, in}, 0.0, init_std, gen));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

Variable Linear::forward(const Variable& x) const {
  LOPPER_CHECK(x.size(-1) == weight.size(1), "[linear] input ", shape_str(x.shape()), " vs weight ",
               shape_str(weight.shape()));
  return ag::linear(x, weight, bias);
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen, double init_std) {
  weight = register_parameter("weight", normal({num, dim}, 0.0, init_std, gen));
}

Variable Embedding::forward(const Tensor& ids) const { return ag::embedding(weight, ids); }

LayerNorm::LayerNorm(int64_t dim, double eps) : eps(eps) {
  weight = register_parameter("weight", Tensor::ones({dim}));
  bias = register_parameter("bias", Tensor::zeros({dim}));
}

Variable LayerNorm::forward(const Variable& x) const { return ag::layer_norm(x, weight, bias, eps); }

Activation activation_from_name(const std::string& n) {
  if (n == "gelu") return Activation::gelu;
  if (n == "gelu_new" || n == "gelu_pytorch_tanh" || n == "gelu_fast") return Activation::gelu_tanh;
  if (n == "relu") return Activation::relu;
  if (n == "tanh") return Activation::tanh;
  LOPPER_FAIL("[activation] unknown hidden_act '", n, "' (expected gelu, gelu_new, gelu_pytorch_tanh, relu, tanh)");
}

Variable activate(Activation a, const Variable& x) {
  switch (a) {
    case Activation::gelu: return ag::gelu(x);
    case Activation::gelu_tanh: return ag::gelu_tanh(x);
    case Activation::relu: return ag::relu(x);
    case Activation::tanh: return ag::tanh(x);
  }
  return x;
}

}  // namespace lopper::nn
