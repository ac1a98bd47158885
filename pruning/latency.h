// A latency lookup table for BERT layers (Kwon et al.'s generate_lut.py): the measured
// forward time of one attention block as a function of its heads and of one FFN block as a
// function of its neurons, on this machine, at one batch size and sequence length; its
// piecewise-linear fit; and the estimate for a model. Written by apps/latency_table, read by
// the fisher_search stage. Not a benchmark of whole models (bench/bench_bert).
#pragma once
#include <string>
#include <vector>

#include "nn/bert_config.h"

namespace lopper::pruning {

struct LatencyTable {
  int64_t batch = 0, seq_len = 0, hidden_size = 0, head_dim = 0, threads = 0;
  std::string cpu;                // where it was measured
  std::vector<double> attention;  // ms, [h] for h = 0..heads kept (0 costs nothing)
  std::vector<double> ffn;        // ms, [n] for n = 0..neurons kept

  static LatencyTable load(const std::string& path);  // throws, naming the file and the key
  void save(const std::string& path) const;
  // Throws unless the table was measured for blocks of c's shape (hidden size, head size, and
  // at least as many heads and neurons as any layer of c has).
  void check(const nn::BertConfig& c, const std::string& path) const;
};

// Measures the table for c's hidden size and head size: every head count 1..heads and
// neuron counts 1..intermediate in steps of ffn_step (linear in between), each the median of
// `repeats` timed forwards after warm-up, on random inputs (B, T, C). Progress on stderr.
LatencyTable measure_latency_table(const nn::BertConfig& c, int64_t batch, int64_t seq_len, int64_t ffn_step,
                                   int64_t repeats);

// lut[n] for n >= 1 (lut[0] is ignored) as c for n <= threshold, c + slope (n - threshold)
// beyond: the threshold that fits best by least squares, as Kwon's fit_latency_fn.
struct PiecewiseLinear {
  int64_t threshold = 0;
  double c = 0, slope = 0;
  double operator()(int64_t n) const;
};
PiecewiseLinear fit_latency(const std::vector<double>& lut);

// The table's latency of a model with these heads and neurons per layer (the sum over
// sub-layers; what the model's layers cost, embeddings and head excluded).
double table_latency(const LatencyTable& lut, const std::vector<int64_t>& heads, const std::vector<int64_t>& neurons);

}  // namespace lopper::pruning
