// SentencePiece: a small model trained in the test (libsentencepiece's trainer) loads, and
// Lopper's encode equals the library's pieces with the special tokens placed as BERT does.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/tokenizer.h"

using namespace lopper;

TEST(SentencePiece, TrainedModelEncodesWithSpecialTokens) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "lopper_spm";
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "corpus.txt");
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "quickly", "slowly"};
    for (int i = 0; i < 2000; ++i) f << words[i % 12] << " " << words[(i * 7) % 12] << " " << words[(i * 5) % 12] << "\n";
  }
  std::string prefix = (dir / "spiece").string();
  auto st = sentencepiece::SentencePieceTrainer::Train("--input=" + (dir / "corpus.txt").string() + " --model_prefix=" +
                                                       prefix + " --vocab_size=40 --user_defined_symbols=[CLS],[SEP] "
                                                       "--pad_id=3 --minloglevel=2");
  ASSERT_TRUE(st.ok()) << st.ToString();
  data::SentencePieceTokenizer tok(prefix + ".model");
  sentencepiece::SentencePieceProcessor ref;
  ASSERT_TRUE(ref.Load(prefix + ".model").ok());
  std::vector<int> ids;
  ASSERT_TRUE(ref.Encode("the cat sat quickly", &ids).ok());
  data::Encoding e = tok.encode("the cat sat quickly");
  ASSERT_EQ(e.input_ids.size(), ids.size() + 2);
  EXPECT_EQ(e.input_ids.front(), ref.PieceToId("[CLS]"));
  EXPECT_EQ(e.input_ids.back(), ref.PieceToId("[SEP]"));
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(e.input_ids[i + 1], ids[i]);
  EXPECT_EQ(tok.pad_id(), 3);
  // load_tokenizer finds the model by its conventional name (the prefix above made it).
  EXPECT_EQ(data::load_tokenizer(dir.string())->encode("a dog").input_ids, tok.encode("a dog").input_ids);
  EXPECT_THROW(data::SentencePieceTokenizer((dir / "missing.model").string()), Error);
  fs::remove_all(dir);
}
