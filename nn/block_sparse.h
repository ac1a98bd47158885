// Block-sparse inference for a whole model: while a BlockSparseScope lives, every Linear on
// the CPU whose weight has few enough non-zero blocks runs its forward through the
// block-sparse matmul (core/block_sparse.h) whenever no gradient is recorded: evaluation
// and latency of a block-pruned model, at the speed its zeros allow. Every other Linear is
// packed the same way (all blocks kept) for inputs of at most dense_max_rows tokens, where
// libxsmm's small-GEMM kernel is faster than oneDNN's sgemm (docs/benchmarks.md), or, when
// asked (dense_panels), for every input in panels (core/panel_linear.h).
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
  // Whether dense weights (above max_density) go through the panel-packed GEMM: where the
  // CPU prefers it (panel_linear_preferred: no AVX-512), always (where built), or never.
  // Off by default: 1-3% faster than oneDNN in a quiet window on an AVX2-only Zen 3, but
  // about 10% slower there while other VMs loaded the machine (docs/benchmarks.md).
  enum class Panels { where_preferred, always, never };
  Panels dense_panels = Panels::never;
  // The names experiment files and bench_bert use: "auto", "always", "never".
  static const std::vector<std::string>& panels_names();
  static Panels panels_from_name(const std::string& name);  // throws for any other
  // Dense weights not in panels go through the block-sparse kernel for inputs of at most
  // this many rows (tokens in the batch); 0 keeps them on oneDNN always. The default is
  // where the two cross on the CPUs measured (docs/benchmarks.md).
  int64_t dense_max_rows = 64;
};

struct BlockSparseLayer {
  std::string name;  // the Linear's Hugging Face name
  int64_t block_rows, block_cols;  // 0, 0 where no listed block divides the weight
  double density;                   // kept blocks over all (1 where no listed block divides)
  bool dense = false;   // density above max_density: in panels, or packed for short inputs
  bool panels = false;  // dense, and packed in panels
};

class BlockSparseScope {
 public:
  BlockSparseScope(Module& model, const BlockSparseOptions& options);
  ~BlockSparseScope();  // every Linear back to its dense weight
  BlockSparseScope(const BlockSparseScope&) = delete;
  BlockSparseScope& operator=(const BlockSparseScope&) = delete;

  const std::vector<BlockSparseLayer>& layers() const { return layers_; }
  // Linears switched for every input, as block-sparse (not those packed for short inputs).
  int64_t sparse_count() const;
  // "12 of 38 Linears block-sparse (32x32), mean block density 0.14; 26 dense ones packed in
  // panels" (or "packed for inputs of at most 64 rows"), or "" when none.
  std::string describe() const;

 private:
  std::vector<class Linear*> switched_;
  std::vector<BlockSparseLayer> layers_;
  int64_t linears_ = 0;
  int64_t dense_max_rows_ = 0;
};

}  // namespace lopper::nn
