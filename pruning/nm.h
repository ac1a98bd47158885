// N:M sparsity patterns over plain weight matrices (NVIDIA's ASP and its arbitrary-N:M
// extension, Apex pull request 1631): in every group of M consecutive units along a
// weight's input dimension keep the N of largest magnitude; 2D N:M (each M x M block keeps
// N per row and N per column: exactly, or by ASP's greedy); a unit is one weight, a vector
// of v weights down a column, or a block; unstructured selection of units at a density;
// and the channel-permutation search (Pool and Yu, NeurIPS 2021) that raises the magnitude
// an N:M pattern keeps. Not the model: pruning/nm_prune.h applies these to a BERT.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lopper::pruning {

enum class NmKind { one_d, two_d, unstructured };

struct NmPattern {
  NmKind kind = NmKind::one_d;
  int64_t n = 2, m = 4;                  // one_d, two_d: keep n of every m units
  double density = 0.5;                  // unstructured: share of the units kept
  int64_t unit_rows = 1, unit_cols = 1;  // 1x1: a weight; v x 1: v weights down a column
                                         // (v outputs of one input, Apex's vector-wise); bh x bw: a block
  bool greedy = false;                   // two_d: ASP's greedy instead of the exact best
  double share_kept() const;             // n / m, or density
  std::string str() const;               // "2:4", "2:4 2d", "2:4 of 4x1 units", "density 0.5 of 4x4 units"
};

// Throws naming the key (n, m, density, vector, block) when the pattern is invalid.
void check_pattern(const NmPattern& p);
// Throws naming `what` when p does not tile a (rows, cols) matrix.
void check_fits(const NmPattern& p, int64_t rows, int64_t cols, const std::string& what);

// (rows / unit_rows, cols / unit_cols): sum of |w| over each unit of w (rows, cols).
std::vector<float> unit_scores(const Tensor& w, int64_t unit_rows, int64_t unit_cols);

// 0/1 per unit of the unit scores u (R, C), row-major:
// the n largest of every m consecutive in a row (ties to the lower index): the best 1D choice;
std::vector<uint8_t> top_n_of_m(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m);
// in every m x m block, at most n per row and per column with the largest sum: exact (a
// min-cost flow; ASP's exhaustive search covers only patterns of exactly n, which can keep
// less), or ASP's greedy (largest first while its row and column have room);
std::vector<uint8_t> best_2d(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m);
std::vector<uint8_t> greedy_2d(const std::vector<float>& u, int64_t R, int64_t C, int64_t n, int64_t m);
// the round(density * R * C) largest (at least one; ties to the lower index): top_v_mask.
std::vector<uint8_t> top_share(const std::vector<float>& u, double density);

// 0/1 mask (rows, cols), f32 on w's device, of what p keeps of w (rows, cols) by magnitude.
Tensor nm_mask(const Tensor& w, const NmPattern& p);
// Groups of w (rows, cols) that hold more non-zero units than p allows (for unstructured:
// the non-zero units over the allowed count, if above): 0 when w obeys p.
int64_t nm_violations(const Tensor& w, const NmPattern& p);
// Share of sum |w| that mask (0/1, same shape) keeps.
double kept_magnitude(const Tensor& w, const Tensor& mask);

// The channel permutation of a matrix's columns that makes top_n_of_m keep the most of the
// scores s (R, C), row-major, non-negative: greedy best swaps of two columns of different
// groups, from the identity, until no swap gains (Pool and Yu's channel swaps, without the
// random escapes). Columns move only inside segments of `segment` columns (a multiple of
// m dividing C): a head's channels, say. perm[k] is the original column now at k.
struct PermutationResult {
  std::vector<int64_t> perm;
  double kept_before = 0, kept_after = 0;  // sum of the kept scores, identity and perm
  int64_t swaps = 0;
};
PermutationResult search_permutation(const std::vector<float>& s, int64_t R, int64_t C, int64_t n, int64_t m,
                                     int64_t segment, int64_t max_swaps = 100000);

}  // namespace lopper::pruning
