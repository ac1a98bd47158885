// WordPiece ids against transformers' BertTokenizer for every fixture sentence and pair
// (tests/fixtures/tokenizer, written by make_fixtures.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"

using namespace lopper;

namespace {
const std::string kFixtures = std::string(LOPPER_SOURCE_DIR) + "/tests/fixtures/tokenizer/";
const std::string kVocab = std::string(LOPPER_SOURCE_DIR) + "/../shared/data/bert-base-uncased/vocab.txt";

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

class WordPiece : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kVocab)) GTEST_SKIP() << "no " << kVocab << " (the shared data folder)";
    tok = std::make_unique<data::WordPieceTokenizer>(kVocab, data::WordPieceOptions{});
  }
  std::unique_ptr<data::WordPieceTokenizer> tok;
};
}  // namespace

TEST_F(WordPiece, SingleSentencesMatchTransformers) {
  auto rows = read_jsonl(kFixtures + "single.jsonl");
  ASSERT_GT(rows.size(), 250u);
  int mismatches = 0;
  for (auto& r : rows) {
    data::Encoding e = tok->encode(r["text"].get<std::string>());
    if (e.input_ids != r["input_ids"].get<std::vector<int64_t>>() ||
        e.token_type_ids != r["token_type_ids"].get<std::vector<int64_t>>()) {
      ADD_FAILURE() << "text: " << r["text"].dump() << "\nexpected " << r["input_ids"].dump() << "\ngot      "
                    << nlohmann::json(e.input_ids).dump();
      if (++mismatches > 5) break;
    }
  }
}

TEST_F(WordPiece, PairsMatchTransformers) {
  for (auto& r : read_jsonl(kFixtures + "pairs.jsonl")) {
    std::string b = r["text_pair"];
    data::Encoding e = tok->encode(r["text"].get<std::string>(), &b);
    ASSERT_EQ(e.input_ids, r["input_ids"].get<std::vector<int64_t>>()) << r["text"].dump() << " / " << b;
    ASSERT_EQ(e.token_type_ids, r["token_type_ids"].get<std::vector<int64_t>>());
  }
}

TEST_F(WordPiece, LongestFirstTruncationMatchesTransformers) {
  for (auto& r : read_jsonl(kFixtures + "pairs_truncated.jsonl")) {
    std::string b = r["text_pair"];
    data::Encoding e = tok->encode(r["text"].get<std::string>(), &b, r["max_length"].get<int64_t>());
    ASSERT_EQ(e.input_ids, r["input_ids"].get<std::vector<int64_t>>())
        << r["text"].dump() << " / " << b << " max_length " << r["max_length"];
    ASSERT_EQ(e.token_type_ids, r["token_type_ids"].get<std::vector<int64_t>>());
  }
}

TEST_F(WordPiece, WordPiecesAndErrors) {
  // Greedy longest-match-first on a vocab small enough to work out by hand.
  std::string vocab = (std::filesystem::temp_directory_path() / "lopper_vocab.txt").string();
  std::ofstream(vocab) << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\nu\n##aff\n##a\n##able\n##ff\n";
  data::WordPieceTokenizer small(vocab, {});
  EXPECT_EQ(small.tokenize("Unaffable"), (std::vector<std::string>{"un", "##aff", "##able"}));
  EXPECT_EQ(small.tokenize("unx un"), (std::vector<std::string>{"[UNK]", "un"}));  // a word without pieces is [UNK]
  EXPECT_EQ(small.encode("un", nullptr, 0).input_ids, (std::vector<int64_t>{2, 5, 3}));
  EXPECT_EQ(tok->token_id("[CLS]"), 101);
  EXPECT_THROW(tok->token_id("definitely-not-a-token"), Error);
  EXPECT_THROW(tok->encode("a", nullptr, 1), Error);
  EXPECT_THROW(data::WordPieceTokenizer("/nonexistent/vocab.txt", {}), Error);
}
