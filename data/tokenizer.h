// Tokenizers that produce model inputs: WordPiece (BERT, the same ids as transformers'
// BertTokenizer) and SentencePiece (through libsentencepiece). Both turn one text or a pair
// into input_ids and token_type_ids with [CLS]/[SEP] (or the model's equivalents),
// longest-first truncation and padding. Not a Unicode library: utf8proc does that.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace lopper::data {

struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Sub-word ids of a text, without special tokens.
  virtual std::vector<int64_t> encode_ids(const std::string& text) const = 0;
  virtual int64_t cls_id() const = 0;
  virtual int64_t sep_id() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t vocab_size() const = 0;

  // [CLS] a [SEP] (b [SEP]); max_length > 0 truncates longest-first to fit, as
  // transformers' truncation="longest_first".
  Encoding encode(const std::string& a, const std::string* b = nullptr, int64_t max_length = 0) const;
};

struct WordPieceOptions {
  bool lowercase = true;
  bool strip_accents = true;  // transformers: follows lowercase unless set
  bool tokenize_chinese_chars = true;
  int64_t max_chars_per_word = 100;
};

class WordPieceTokenizer : public Tokenizer {
 public:
  WordPieceTokenizer(const std::string& vocab_path, WordPieceOptions options);
  // vocab.txt plus do_lower_case / strip_accents / tokenize_chinese_chars from
  // tokenizer_config.json when present.
  static std::unique_ptr<WordPieceTokenizer> from_pretrained(const std::string& dir);

  std::vector<std::string> tokenize(const std::string& text) const;  // word pieces
  std::vector<int64_t> encode_ids(const std::string& text) const override;
  int64_t token_id(const std::string& token) const;  // throws if absent
  const std::string& token(int64_t id) const;
  int64_t cls_id() const override { return cls_; }
  int64_t sep_id() const override { return sep_; }
  int64_t pad_id() const override { return pad_; }
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }

 private:
  std::vector<std::string> basic_tokenize(const std::string& text) const;
  void wordpiece(const std::string& word, std::vector<std::string>& out) const;

  WordPieceOptions options_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  std::vector<std::string> specials_;  // matched verbatim before normalization
  int64_t cls_ = 0, sep_ = 0, pad_ = 0, unk_ = 0;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // A SentencePiece model; the special ids are looked up by piece (e.g. "[CLS]" or "<s>").
  SentencePieceTokenizer(const std::string& model_path, const std::string& cls_piece = "[CLS]",
                         const std::string& sep_piece = "[SEP]", const std::string& pad_piece = "<pad>");
  ~SentencePieceTokenizer() override;
  std::vector<int64_t> encode_ids(const std::string& text) const override;
  std::vector<std::string> pieces(const std::string& text) const;
  int64_t cls_id() const override { return cls_; }
  int64_t sep_id() const override { return sep_; }
  int64_t pad_id() const override { return pad_; }
  int64_t vocab_size() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t cls_ = 0, sep_ = 0, pad_ = 0;
};

// The tokenizer a checkpoint folder ships: vocab.txt (WordPiece) or spiece.model /
// sentencepiece.bpe.model (SentencePiece).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace lopper::data
