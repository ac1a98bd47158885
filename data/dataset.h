// Task data: readers for GLUE TSV, CSV and JSONL (columns by name or index, labels as ints,
// strings or floats), tokenized datasets, and a seeded loader with length bucketing,
// dynamic padding and sharding by rank. Not a streaming pipeline: GLUE-sized data fits in
// memory many times over.
#pragma once
#include <cstdint>
#include <utility>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/tokenizer.h"

namespace lopper::data {

// Where the fields are. A column is a header name or, as digits, a 0-based index.
struct TaskSpec {
  std::string format = "tsv";  // tsv, csv, jsonl
  bool header = true;          // tsv/csv: first line names the columns
  std::string text = "sentence";
  std::string text_pair;       // empty: single-sentence task
  std::string label = "label";
  std::string label_type = "int";       // int (class index), string (one of label_names), float (regression)
  std::vector<std::string> label_names; // string labels, in class-index order
  int64_t num_labels = 2;               // 1 for regression

  // Presets for GLUE tasks: sst2, cola, mrpc, rte, qnli, qqp, mnli, stsb, wnli.
  static TaskSpec glue(const std::string& task);
};

struct Example {
  std::string text, text_pair;
  float label = 0;  // class index, or the target value for regression
};

// Reads up to max_examples (0 = all). Errors name the file, the line and what was wrong:
// a missing column, a label outside the label set, an empty file.
std::vector<Example> read_examples(const std::string& path, const TaskSpec& spec, int64_t max_examples = 0);

struct Batch {
  Tensor input_ids;       // (B, T) i64
  Tensor token_type_ids;  // (B, T) i64
  Tensor attention_mask;  // (B, T) i64
  Tensor labels;          // (B) i64, or f32 for regression
  int64_t tokens = 0;     // real (unpadded) tokens
};

class Dataset {
 public:
  Dataset(const std::vector<Example>& examples, const Tokenizer& tok, int64_t max_seq_len, bool regression);
  int64_t size() const { return static_cast<int64_t>(encodings_.size()); }
  // Pads the given examples to the longest of them (dynamic padding).
  Batch collate(const std::vector<int64_t>& indices) const;
  int64_t length(int64_t i) const { return static_cast<int64_t>(encodings_[i].input_ids.size()); }
  bool regression() const { return regression_; }
  const std::vector<float>& labels() const { return labels_; }

 private:
  std::vector<Encoding> encodings_;
  std::vector<float> labels_;
  int64_t pad_id_ = 0;
  bool regression_ = false;
};

// Fisher-Yates with g, last element first: the one shuffle of the data (epochs, samples).
template <class T>
void shuffle_in_place(std::vector<T>& v, Generator& g) {
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i)
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(g.next_below(static_cast<uint64_t>(i + 1)))]);
}

// Mean tokens per example, rounded: the length FLOPs and latency are counted at.
int64_t mean_length(const Dataset& d);

// The batches of one epoch, as example indices: shuffled by (seed, epoch), then sorted by
// length inside windows of 50 batches so each batch pads little, then the batch order
// shuffled again. rank/world keep every world-th batch (data parallelism). Without
// shuffle: dataset order, no bucketing (evaluation).
std::vector<std::vector<int64_t>> epoch_batches(const Dataset& d, int64_t batch_size, bool shuffle, uint64_t seed,
                                                int64_t epoch, int64_t rank = 0, int64_t world = 1);

}  // namespace lopper::data
