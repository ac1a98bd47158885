// SentencePiece through libsentencepiece, and load_tokenizer() for checkpoint folders.
#include <sentencepiece_processor.h>

#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"

namespace lopper::data {

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path, const std::string& cls_piece,
                                               const std::string& sep_piece, const std::string& pad_piece)
    : impl_(std::make_unique<Impl>()) {
  LOPPER_CHECK(!std::filesystem::is_directory(model_path), "[sentencepiece] '", model_path, "' is a folder, expected a file");
  auto st = impl_->sp.Load(model_path);
  LOPPER_CHECK(st.ok(), "[sentencepiece] cannot load '", model_path, "': ", st.ToString());
  auto lookup = [&](const std::string& piece, int fallback) -> int64_t {
    int id = impl_->sp.PieceToId(piece);
    // PieceToId returns unk for unknown pieces; only accept an exact match.
    if (impl_->sp.IdToPiece(id) == piece) return id;
    LOPPER_CHECK(fallback >= 0, "[sentencepiece] model '", model_path, "' has no piece '", piece, "'");
    return fallback;
  };
  cls_ = lookup(cls_piece, impl_->sp.bos_id());
  sep_ = lookup(sep_piece, impl_->sp.eos_id());
  pad_ = lookup(pad_piece, impl_->sp.pad_id() >= 0 ? impl_->sp.pad_id() : 0);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int64_t> SentencePieceTokenizer::encode_ids(const std::string& text) const {
  std::vector<int> ids;
  auto st = impl_->sp.Encode(text, &ids);
  LOPPER_CHECK(st.ok(), "[sentencepiece] encode failed: ", st.ToString());
  return {ids.begin(), ids.end()};
}

std::vector<std::string> SentencePieceTokenizer::pieces(const std::string& text) const {
  std::vector<std::string> p;
  auto st = impl_->sp.Encode(text, &p);
  LOPPER_CHECK(st.ok(), "[sentencepiece] encode failed: ", st.ToString());
  return p;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "vocab.txt")) return WordPieceTokenizer::from_pretrained(dir);
  for (const char* name : {"spiece.model", "sentencepiece.bpe.model", "tokenizer.model"}) {
    fs::path p = fs::path(dir) / name;
    if (fs::exists(p)) return std::make_unique<SentencePieceTokenizer>(p.string());
  }
  LOPPER_FAIL("[tokenizer] '", dir, "' has no vocab.txt (WordPiece) or spiece.model (SentencePiece)");
}

}  // namespace lopper::data
