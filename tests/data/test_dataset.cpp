// Task readers (TSV, CSV with quotes, JSONL; columns by name or index; int, string and
// float labels), and the epoch batcher (seeded, complete, bucketed, sharded).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "data/dataset.h"

using namespace lopper;
namespace fs = std::filesystem;

namespace {
std::string write_file(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("lopper_data_" + name);
  std::ofstream(p) << text;
  return p.string();
}
}  // namespace

TEST(Readers, GluePresetsAndFormats) {
  // CoLA: no header, label in column 1, sentence in column 3.
  auto cola = data::read_examples(write_file("cola.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tSat cat the.\n"),
                                  data::TaskSpec::glue("cola"));
  ASSERT_EQ(cola.size(), 2u);
  EXPECT_EQ(cola[1].text, "Sat cat the.");
  EXPECT_EQ(cola[1].label, 0.0f);
  // RTE: a pair task with string labels.
  auto rte = data::read_examples(write_file("rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n"),
                                 data::TaskSpec::glue("rte"));
  EXPECT_EQ(rte[0].text_pair, "C d.");
  EXPECT_EQ(rte[0].label, 1.0f);
  // STS-B: float labels.
  auto sts = data::read_examples(write_file("stsb.tsv", "sentence1\tsentence2\tscore\nx\ty\t3.8\n"), data::TaskSpec::glue("stsb"));
  EXPECT_FLOAT_EQ(sts[0].label, 3.8f);
  // CSV with quoted commas and doubled quotes; columns by index.
  data::TaskSpec csv;
  csv.format = "csv";
  csv.text = "1";
  csv.label = "0";
  auto c = data::read_examples(write_file("x.csv", "label,text\n1,\"hello, \"\"world\"\"\"\n"), csv);
  EXPECT_EQ(c[0].text, "hello, \"world\"");
  // JSONL with the text/text_pair/label fields; max_examples caps.
  data::TaskSpec jl;
  jl.format = "jsonl";
  jl.text = "text";
  jl.text_pair = "text_pair";
  jl.label = "label";
  auto j = data::read_examples(write_file("x.jsonl", "{\"text\":\"a\",\"text_pair\":\"b\",\"label\":1}\n\n{\"text\":\"c\",\"text_pair\":\"d\",\"label\":0}\n"), jl, 1);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].text_pair, "b");
}

TEST(Readers, ErrorsNameFileAndLine) {
  auto msg = [](const std::string& path, const data::TaskSpec& s) {
    try {
      data::read_examples(path, s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto sst = data::TaskSpec::glue("sst2");
  EXPECT_NE(msg(write_file("a.tsv", "sentence\tlabel\nok\t1\nbad\n"), sst).find("a.tsv:3: row has 1 columns"), std::string::npos);
  EXPECT_NE(msg(write_file("b.tsv", "sentence\tlabel\nok\t2\n"), sst).find("b.tsv:2: label '2'"), std::string::npos);
  EXPECT_NE(msg(write_file("c.tsv", "sentence\tlabel\n"), sst).find("holds no examples"), std::string::npos);
  EXPECT_NE(msg(write_file("d.tsv", "text\tlabel\nx\t1\n"), sst).find("no text column 'sentence'"), std::string::npos);
  EXPECT_NE(msg(write_file("e.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n"), data::TaskSpec::glue("rte"))
                .find("not one of {entailment, not_entailment}"), std::string::npos);
  EXPECT_THROW(data::TaskSpec::glue("squad"), Error);
  EXPECT_THROW(data::read_examples("/nonexistent.tsv", sst), Error);
}

namespace {
// The WordPiece tokenizer over a one-word vocab, sentences of 1 to 17 words.
struct Fixture {
  Fixture() {
    std::string vocab = write_file("vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n");
    tok = std::make_unique<data::WordPieceTokenizer>(vocab, data::WordPieceOptions{});
    for (int i = 0; i < 103; ++i) {  // "a a a ..." with i % 17 + 1 words
      std::string s;
      for (int k = 0; k <= i % 17; ++k) s += "a ";
      examples.push_back({s, "", static_cast<float>(i % 2)});
    }
  }
  std::unique_ptr<data::WordPieceTokenizer> tok;
  std::vector<data::Example> examples;
};
}  // namespace

TEST(Loader, EpochsAreSeededCompleteBucketedAndSharded) {
  Fixture f;
  data::Dataset d(f.examples, *f.tok, 32, false);
  auto e0 = data::epoch_batches(d, 8, true, 1, 0), again = data::epoch_batches(d, 8, true, 1, 0);
  EXPECT_EQ(e0, again);
  EXPECT_NE(e0, data::epoch_batches(d, 8, true, 1, 1));  // a new order each epoch
  std::multiset<int64_t> seen;
  for (auto& b : e0) seen.insert(b.begin(), b.end());
  EXPECT_EQ(seen.size(), 103u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 103u);
  // Bucketing: batches pad far less than random batches would (lengths 3..19).
  int64_t padded = 0, real = 0;
  for (auto& b : e0) {
    int64_t mx = 0;
    for (int64_t i : b) { mx = std::max(mx, d.length(i)); real += d.length(i); }
    padded += mx * static_cast<int64_t>(b.size());
  }
  EXPECT_LT(static_cast<double>(padded) / real, 1.2);
  // Shards are disjoint and together complete.
  auto r0 = data::epoch_batches(d, 8, true, 1, 0, 0, 2), r1 = data::epoch_batches(d, 8, true, 1, 0, 1, 2);
  EXPECT_EQ(r0.size() + r1.size(), e0.size());
  std::set<int64_t> s0, s1;
  for (auto& b : r0) s0.insert(b.begin(), b.end());
  for (auto& b : r1) s1.insert(b.begin(), b.end());
  for (int64_t i : s0) EXPECT_FALSE(s1.count(i));
  // Collate pads to the longest and masks the padding.
  data::Batch b = d.collate({0, 16});
  EXPECT_EQ(b.input_ids.shape(), (Shape{2, d.length(16)}));
  auto mask = b.attention_mask.to_vector<int64_t>();
  EXPECT_EQ(std::count(mask.begin(), mask.end(), 1), d.length(0) + d.length(16));
}
