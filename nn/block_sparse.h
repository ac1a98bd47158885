// Block-sparse inference for a whole model: while a BlockSparseScope lives, every Linear on
// the CPU whose weight has few enough non-zero blocks runs its forward through the
// block-sparse matmul (core/block_sparse.h) whenever no gradient is recorded: evaluation
// and latency of a block-pruned model, at the speed its zeros allow.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace lopper::nn {

struct BlockSparseOptions {
  // A weight switches when its share of non-zero blocks is at most this; 0 turns it off.
  double max_density = 0.6;
  // Block shapes (rows, cols); of those that divide the weight, the one with the lowest
  // density is used (ties: the earlier listed).
  std::vector<std::pair<int64_t, int64_t>> blocks = {{32, 32}, {16, 16}};
};

struct BlockSparseLayer {
  std::string name;  // the Linear's Hugging Face name
  int64_t block_rows, block_cols;
  double density;  // kept blocks over all
};

class BlockSparseScope {
 public:
  BlockSparseScope(Module& model, const BlockSparseOptions& options);
  ~BlockSparseScope();  // every Linear back to its dense weight
  BlockSparseScope(const BlockSparseScope&) = delete;
  BlockSparseScope& operator=(const BlockSparseScope&) = delete;

  const std::vector<BlockSparseLayer>& layers() const { return layers_; }
  // "12 of 38 Linears block-sparse (32x32), mean density 0.14", or "" when none.
  std::string describe() const;

 private:
  std::vector<class Linear*> switched_;
  std::vector<BlockSparseLayer> layers_;
  int64_t linears_ = 0;
};

}  // namespace lopper::nn
