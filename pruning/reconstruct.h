// Layer-wise least-squares reconstruction for retraining-free pruning. A teacher (the model
// before pruning) and a student (the pruned one) walk up the encoder together on the same
// examples; at each sub-layer (attention, then FFN) the student's output projection input X
// and the target Y (the teacher's sub-layer output before LayerNorm, less the student's
// residual) are summed into normal equations, from which either the kept heads' or neurons'
// mask values are rescaled (Kwon et al. 2022) or the whole output projection is refitted
// (K-prune's weight tuning, Park et al. 2024). Eigen's LDLT solves the damped systems. Not the
// search (pruning/fisher.h).
#pragma once
#include <vector>

#include "nn/bert.h"
#include "pruning/fisher.h"

namespace lopper::pruning {

// Sums over the rows (tokens) of X (N, w) with a ones column appended, and Y (N, C).
struct NormalEquations {
  int64_t w = 0, c = 0, rows = 0;
  std::vector<double> xtx;  // (w + 1, w + 1): [X 1]^T [X 1]
  std::vector<double> xty;  // (w + 1, c): [X 1]^T Y
  double yty = 0;           // sum of Y^2
  void add(const Tensor& x, const Tensor& y);  // x (N, w), y (N, c), any device
};

// Sum over rows of |x V^T - y|^2 for V = [W b] (c, w + 1): the reconstruction error of an
// output projection W (c, w) with bias b, from the equations alone.
double projection_error(const NormalEquations& e, const std::vector<double>& v);
// V = [W diag(s repeated group times) b] for a Linear (out, in) with mask values s per group of
// `group` inputs: the projection a mask makes.
std::vector<double> masked_projection(const nn::Linear& lin, const std::vector<double>& s, int64_t group);

// Scale per group of `group` inputs of lin (the groups with keep[i]; 0 for the others) that
// minimizes the error of masked_projection(lin, scale, group), damped towards 1 (the plain
// mask): (A + lambda I)(x - 1) = b - A 1, lambda = damp x mean diag(A). The damping makes
// the error at the result never above the error at 1. Empty if the solve is not finite.
std::vector<double> solve_scales(const NormalEquations& e, const nn::Linear& lin, int64_t group,
                                 const std::vector<bool>& keep, double damp);
// Refits lin's weight and bias to minimize projection_error, damped towards their current
// values (so the error never rises). Returns false (lin untouched) if the solve is not finite.
bool tune_projection(const NormalEquations& e, nn::Linear& lin, double damp);

// The two models' hidden states on a fixed set of batches, from the embeddings up, one
// sub-layer at a time: attention() sums the equations of the current layer's attention,
// then the caller changes the student's attention (masks, weights, heads) and calls
// attention_done(); ffn() and ffn_done() the same for the FFN, which moves to the next
// layer. Both models are used in eval mode without gradients; each keeps its own hooks.
class LayerWalk {
 public:
  LayerWalk(const nn::BertModel& teacher, const nn::BertModel& student, std::vector<ExampleBatch> batches);
  int64_t layer() const { return layer_; }
  // cls_only: only the first token of each example counts (the last layer of a classifier,
  // whose other tokens the head never reads).
  NormalEquations attention(bool cls_only);
  void attention_done();
  NormalEquations ffn(bool cls_only);
  void ffn_done();

 private:
  Tensor rows(const Tensor& h, size_t b, bool cls_only) const;  // (B, T, w) -> (N, w) real tokens

  const nn::BertModel &teacher_, &student_;
  std::vector<ExampleBatch> batches_;
  std::vector<Tensor> additive_;          // per batch (B, 1, 1, T)
  std::vector<Tensor> real_rows_, cls_rows_;  // per batch (N) i64: rows of (B * T) that rows() keeps
  std::vector<Tensor> teacher_h_, student_h_;  // per batch (B, T, C): the current sub-layer's inputs
  int64_t layer_ = 0;
};

}  // namespace lopper::pruning
