// The retraining-free pipelines on a fine-tuned classifier, from a few thousand examples and
// no optimizer step: Kwon et al.'s one shot (Fisher search under a FLOPs or latency budget,
// rearrangement, least-squares mask rescaling) and an iterative mode in the spirit of
// K-prune (Park et al. 2024: one sub-layer at a time from the bottom up, importance measured
// again on the model pruned so far, the sub-layer's output projection refitted by least
// squares). Both end with the masks folded into the weights and the pruned heads and
// neurons removed for real. Not the stage (trainers/stage_fisher.cpp), which samples the
// examples, logs and evaluates.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "pruning/fisher.h"
#include "pruning/latency.h"

namespace lopper::pruning {

struct RetrainFreeOptions {
  std::string constraint = "flops";    // flops | latency
  double target = 0.5;                 // fraction of the budget's unit kept, in (0, 1)
  int64_t seq_len = 128;               // FLOPs are counted for sequences of this length
  const LatencyTable* table = nullptr;  // for the latency constraint
  bool iterative = false;
  bool rearrange = true;
  bool tune = true;     // one shot: rescale the kept masks; iterative: refit the output projections
  double damp = 1e-4;   // ridge of the least-squares solves, relative to the mean diagonal
  bool cls_only = true;  // the last FFN is fitted on the first token only (a classifier reads no other)
};

// Prunes `model` in place. `progress` (may be empty) receives a line per phase. Returns what
// was done for summary.json: budget and cost, heads and neurons kept per layer, the
// rearrangement's Fisher loss before and after, each sub-layer's reconstruction error
// before and after tuning, seconds per phase.
nlohmann::json prune_retrain_free(nn::BertForSequenceClassification& model, const std::vector<ExampleBatch>& batches,
                                  const RetrainFreeOptions& o, const std::function<void(const std::string&)>& progress = {});

// The cost of a model under the options' constraint: FLOPs of the heads and neurons at
// seq_len (pruning::flops_per_head / flops_per_neuron), or the table's latency.
double retrain_free_cost(const nn::BertConfig& c, const RetrainFreeOptions& o);

}  // namespace lopper::pruning
