// Retraining-free structured pruning after Kwon et al. (NeurIPS 2022): per-example gradients
// of the loss with respect to a mask on every head and FFN neuron, their Fisher information,
// the search for the kept heads and neurons under a FLOPs or latency budget, and the
// rearrangement of each layer's mask with that layer's block of the Fisher matrix. Not the
// least-squares step (pruning/reconstruct.h), not the stage that drives them
// (trainers/stage_fisher.cpp).
#pragma once
#include <vector>

#include "nn/bert.h"
#include "pruning/latency.h"

namespace lopper::pruning {

// A padded batch of examples: what the gradients and the reconstruction run on.
struct ExampleBatch {
  Tensor ids, token_types, attention_mask;  // (B, T) i64
  Tensor labels;                            // (B) i64, or f32 for regression
};

// Per example, per layer: d loss(example) / d mask at a mask of ones.
struct MaskGradients {
  std::vector<Tensor> heads;    // per layer (S, H_l) f32, CPU
  std::vector<Tensor> neurons;  // per layer (S, F_l) f32, CPU
};

// One forward and backward per batch with a mask per example on every head and neuron
// ((B, H) and (B, 1, F) hooks), so one backward gives each example's own gradient. The
// model's weights get no gradient; its mask hooks must be unset and are left unset.
MaskGradients mask_gradients(nn::BertForSequenceClassification& model, const std::vector<ExampleBatch>& batches);

// Importance: the diagonal of the empirical Fisher, sum over examples of g^2. (S, n) -> n.
std::vector<double> fisher_diagonal(const Tensor& g);
// The Fisher block G^T G of one layer's masks. (S, n) -> (n, n), row-major, double.
std::vector<double> fisher_block(const Tensor& g);

// Kept heads and neurons per layer (true = kept).
struct Selection {
  std::vector<std::vector<bool>> heads, neurons;
  double cost = 0;        // what it costs in the budget's unit
  double importance = 0;  // sum of the kept items' importance
};
int64_t count_kept(const std::vector<bool>& keep);

// Importance per layer and item. An empty layer vector means "not searched": that sub-layer
// is fixed by the caller, which has taken its cost out of the budget already.
struct Importance {
  std::vector<std::vector<double>> heads, neurons;
};

// The best split under a linear budget: for every number of heads h, the h most important
// heads overall and as many of the most important neurons as the rest of the budget pays
// for; the h with the largest total importance wins. Optimal for two kinds of item of one
// cost each. Costs are per head and per neuron, budget in the same unit.
Selection search_linear(const Importance& imp, double head_cost, double neuron_cost, double budget);

// Under a latency budget from a measured table (Kwon's search_latency): each sub-layer's
// latency as a function of items kept is fitted piecewise linear (a constant up to a
// threshold count, then a slope). Sub-layers are either dropped whole (least important
// first, by the importance of their threshold-many best items) or keep their threshold-many
// best items for the constant; the rest of the budget buys the remaining items globally at
// the slopes. The table itself has the last word: where it puts the choice over budget, the
// search runs again on a lower fitted budget. cost = the table's latency of the searched
// sub-layers, never above budget_ms.
Selection search_latency(const Importance& imp, const LatencyTable& lut, double budget_ms);

// Kwon's greedy rearrangement of one layer: the pruned set P starts as the mask's and each
// kept item, least important first, is swapped in for whichever member of P (it included)
// leaves the smallest quadratic loss 1^T G_PP 1 (G the layer's Fisher block): the number
// kept stays, and the loss never increases.
std::vector<bool> rearrange(const std::vector<bool>& keep, const std::vector<double>& block);
// 1^T G_PP 1: the second-order estimate of the loss increase from pruning P (the items not kept).
double pruned_loss(const std::vector<bool>& keep, const std::vector<double>& block);

}  // namespace lopper::pruning
