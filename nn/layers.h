// Basic layers with Hugging Face parameter names: Linear (weight (out, in), bias),
// Embedding (weight), LayerNorm (weight, bias), Dropout, and the activations BERT names.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "autograd/functions.h"
#include "core/block_sparse.h"
#include "core/panel_linear.h"
#include "nn/module.h"

namespace lopper::nn {

class Linear : public Module {
 public:
  // Weights ~ N(0, init_std), bias zero: BERT's initializer.
  Linear(int64_t in, int64_t out, Generator& gen, bool bias = true, double init_std = 0.02);
  // (..., in) -> (..., out), then act if given (fused with the bias when no gradient is
  // recorded: one pass over the output).
  Variable forward(const Variable& x, std::optional<UnaryOp> act = std::nullopt) const;
  // weight * weight_mask, or weight itself when there is no mask.
  Variable masked_weight() const;  // (out, in)
  Variable weight, bias;           // (out, in), (out)
  // Pruning hook: a differentiable mask on the weight, applied before the matmul and costing
  // nothing when undefined. Either broadcastable to (out, in) (elementwise (out, in), per row
  // (out, 1), per column (1, in)), or 4-D (out / bo, 1, in / bi, 1): one value per block of
  // bo rows by bi columns, applied through a reshape of the weight to (out/bo, bo, in/bi, bi).
  Variable weight_mask;
  // Inference hook: the weight in block-sparse form, set by an nn::BlockSparseScope. forward
  // multiplies by it instead of the dense weight while no gradient is recorded and no
  // weight mask is set, for inputs of at most block_sparse_max_rows rows (a dense weight
  // packed for short inputs, where libxsmm's kernel beats oneDNN's sgemm).
  std::shared_ptr<const BlockSparseMatrix> block_sparse;
  int64_t block_sparse_max_rows = INT64_MAX;
  // Inference hook: the dense weight packed in panels (core/panel_linear.h), also set by the
  // scope; forward multiplies by it, under the same conditions, for the inputs that
  // block_sparse does not take.
  std::shared_ptr<const PanelMatrix> panels;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& gen, double init_std = 0.02);
  Variable forward(const Tensor& ids) const;  // (...) int -> (..., dim)
  Variable weight;                            // (num, dim)
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-12);
  Variable forward(const Variable& x) const;  // normalizes the last dim
  Variable weight, bias;                      // (dim), (dim)
  double eps;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p) : p(p) {}
  Variable forward(const Variable& x, Generator& gen) const { return ag::dropout(x, p, is_training(), gen); }
  double p;
};

enum class Activation { gelu, gelu_tanh, relu, tanh };
// "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh" (Hugging Face's hidden_act).
Activation activation_from_name(const std::string& name);
Variable activate(Activation a, const Variable& x);
UnaryOp unary_op(Activation a);  // the unary op that computes it

}  // namespace lopper::nn
