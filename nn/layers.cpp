// Basic layers.
#include "nn/layers.h"

namespace lopper::nn {

Linear::Linear(int64_t in, int64_t out, Generator& gen, bool has_bias, double init_std) {
  weight = register_parameter("weight", normal({out, in}, 0.0, init_std, gen));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}

Variable Linear::forward(const Variable& x, std::optional<UnaryOp> act) const {
  LOPPER_CHECK(x.size(-1) == weight.size(1), "[linear] input ", shape_str(x.shape()), " vs weight ",
               shape_str(weight.shape()));
  if (grad_enabled()) {
    Variable y = ag::linear(x, masked_weight(), bias);
    return act ? ag::unary(*act, y) : y;
  }
  // Inference: a packed weight, or oneDNN's GEMM and one in-place pass for bias and
  // activation (bitwise the same as the ops above).
  if (!weight_mask.defined() && x.data().device().is_cpu()) {
    const Tensor b = bias.defined() ? bias.data() : Tensor();
    if (block_sparse && x.numel() / std::max<int64_t>(x.size(-1), 1) <= block_sparse_max_rows)
      return Variable(block_sparse_linear(x.data(), *block_sparse, b, act));
    if (panels) return Variable(panel_linear(x.data(), *panels, b, act));
  }
  Tensor y = matmul(x.data(), masked_weight().data(), false, true);
  if (bias.defined() && act) bias_act_(y, bias.data(), *act);
  else if (bias.defined()) add_(y, bias.data());
  else if (act) y = unary(*act, y);
  return Variable(y);
}

Variable Linear::masked_weight() const {
  if (!weight_mask.defined()) return weight;
  int64_t out = weight.size(0), in = weight.size(1);
  const Shape& m = weight_mask.shape();
  if (m.size() == 4) {
    LOPPER_CHECK(m[1] == 1 && m[3] == 1 && m[0] > 0 && m[2] > 0 && out % m[0] == 0 && in % m[2] == 0, "[linear] block mask ",
                 shape_str(m), " for weight ", shape_str(weight.shape()), ": expected (out/bo, 1, in/bi, 1)");
    Variable blocks = ag::reshape(weight, {m[0], out / m[0], m[2], in / m[2]});
    return ag::reshape(ag::mul(blocks, weight_mask), {out, in});
  }
  LOPPER_CHECK(m.size() == 2 && (m[0] == out || m[0] == 1) && (m[1] == in || m[1] == 1), "[linear] mask ", shape_str(m),
               " is not broadcastable to weight ", shape_str(weight.shape()));
  return ag::mul(weight, weight_mask);
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

UnaryOp unary_op(Activation a) {
  switch (a) {
    case Activation::gelu: return UnaryOp::gelu;
    case Activation::gelu_tanh: return UnaryOp::gelu_tanh;
    case Activation::relu: return UnaryOp::relu;
    case Activation::tanh: return UnaryOp::tanh;
  }
  LOPPER_FAIL("[activation] unknown activation ", static_cast<int>(a));
}

Variable activate(Activation a, const Variable& x) { return ag::unary(unary_op(a), x); }

}  // namespace lopper::nn
