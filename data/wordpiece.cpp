// WordPiece as transformers' BertTokenizer does it: special tokens matched verbatim, then
// BertNormalizer (clean text, pad CJK, strip accents, lowercase), split on whitespace and
// punctuation, greedy longest-match-first with "##" continuations.
#include <utf8proc.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"

namespace lopper::data {

namespace {

std::vector<int32_t> decode_utf8(const std::string& s) {
  std::vector<int32_t> cps;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t len = static_cast<utf8proc_ssize_t>(s.size());
  while (len > 0) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, len, &cp);
    if (n <= 0) {  // invalid byte: skip it, as a lossy decode would replace and clean it
      ++p;
      --len;
      continue;
    }
    cps.push_back(cp);
    p += n;
    len -= n;
  }
  return cps;
}

void append_utf8(std::string& out, int32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out.append(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
}

bool is_whitespace(int32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

bool is_control(int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

bool is_punctuation(int32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool is_chinese_char(int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Canonical decomposition with combining marks (Mn) dropped.
void strip_accents_into(int32_t c, std::vector<int32_t>& out) {
  utf8proc_int32_t buf[32];
  int last = 0;
  utf8proc_ssize_t n = utf8proc_decompose_char(c, buf, 32, UTF8PROC_DECOMPOSE, &last);
  if (n < 0 || n > 32) {
    out.push_back(c);
    return;
  }
  for (utf8proc_ssize_t i = 0; i < n; ++i)
    if (utf8proc_category(buf[i]) != UTF8PROC_CATEGORY_MN) out.push_back(buf[i]);
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(const std::string& vocab_path, WordPieceOptions options) : options_(options) {
  LOPPER_CHECK(!std::filesystem::is_directory(vocab_path), "[wordpiece] vocab '", vocab_path, "' is a folder, expected a file");
  std::ifstream f(vocab_path);
  LOPPER_CHECK(f.good(), "[wordpiece] cannot open vocab '", vocab_path, "'");
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    ids_.emplace(line, static_cast<int64_t>(vocab_.size()));
    vocab_.push_back(line);
  }
  LOPPER_CHECK(!vocab_.empty(), "[wordpiece] vocab '", vocab_path, "' is empty");
  for (const char* s : {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"}) {
    LOPPER_CHECK(ids_.count(s), "[wordpiece] vocab '", vocab_path, "' has no ", s, " token");
    specials_.push_back(s);
  }
  unk_ = ids_.at("[UNK]");
  cls_ = ids_.at("[CLS]");
  sep_ = ids_.at("[SEP]");
  pad_ = ids_.at("[PAD]");
}

std::unique_ptr<WordPieceTokenizer> WordPieceTokenizer::from_pretrained(const std::string& dir) {
  namespace fs = std::filesystem;
  WordPieceOptions o;
  fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  bool strip_set = false;
  if (fs::exists(cfg)) {
    std::ifstream f(cfg);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::parse_error& e) {
      LOPPER_FAIL("[wordpiece] '", cfg.string(), "' is not valid JSON: ", e.what());
    }
    if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) o.lowercase = j["do_lower_case"];
    if (j.contains("tokenize_chinese_chars") && j["tokenize_chinese_chars"].is_boolean())
      o.tokenize_chinese_chars = j["tokenize_chinese_chars"];
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean()) {
      o.strip_accents = j["strip_accents"];
      strip_set = true;
    }
  }
  if (!strip_set) o.strip_accents = o.lowercase;
  return std::make_unique<WordPieceTokenizer>((fs::path(dir) / "vocab.txt").string(), o);
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(const std::string& text) const {
  std::vector<int32_t> norm;
  for (int32_t c : decode_utf8(text)) {
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_whitespace(c)) {
      norm.push_back(' ');
    } else if (options_.tokenize_chinese_chars && is_chinese_char(c)) {
      norm.push_back(' ');
      norm.push_back(c);
      norm.push_back(' ');
    } else {
      norm.push_back(c);
    }
  }
  if (options_.strip_accents) {
    std::vector<int32_t> stripped;
    for (int32_t c : norm) strip_accents_into(c, stripped);
    norm.swap(stripped);
  }
  if (options_.lowercase)
    for (int32_t& c : norm) c = utf8proc_tolower(c);
  // Split on whitespace, and make every punctuation character its own token.
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) words.push_back(std::move(cur));
    cur.clear();
  };
  for (int32_t c : norm) {
    if (c == ' ') {
      flush();
    } else if (is_punctuation(c)) {
      flush();
      append_utf8(cur, c);
      flush();
    } else {
      append_utf8(cur, c);
    }
  }
  flush();
  return words;
}

void WordPieceTokenizer::wordpiece(const std::string& word, std::vector<std::string>& out) const {
  std::vector<int32_t> cps = decode_utf8(word);
  if (static_cast<int64_t>(cps.size()) > options_.max_chars_per_word) {
    out.push_back("[UNK]");
    return;
  }
  // Byte offset of each code point, so substrings are cut on character boundaries.
  std::vector<size_t> at{0};
  for (int32_t c : cps) {
    std::string tmp;
    append_utf8(tmp, c);
    at.push_back(at.back() + tmp.size());
  }
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < cps.size()) {
    size_t end = cps.size();
    std::string found;
    while (start < end) {
      std::string sub = word.substr(at[start], at[end] - at[start]);
      if (start > 0) sub = "##" + sub;
      if (ids_.count(sub)) {
        found = std::move(sub);
        break;
      }
      --end;
    }
    if (found.empty()) {
      out.push_back("[UNK]");
      return;
    }
    pieces.push_back(std::move(found));
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::vector<std::string> WordPieceTokenizer::tokenize(const std::string& text) const {
  std::vector<std::string> out;
  // Special tokens are matched verbatim in the raw text, before any normalization.
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t best = std::string::npos;
    const std::string* which = nullptr;
    for (const std::string& s : specials_) {
      size_t f = text.find(s, pos);
      if (f < best) { best = f; which = &s; }
    }
    std::string chunk = text.substr(pos, best == std::string::npos ? std::string::npos : best - pos);
    for (const std::string& w : basic_tokenize(chunk)) wordpiece(w, out);
    if (!which) break;
    out.push_back(*which);
    pos = best + which->size();
  }
  return out;
}

std::vector<int64_t> WordPieceTokenizer::encode_ids(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& t : tokenize(text)) {
    auto it = ids_.find(t);
    ids.push_back(it == ids_.end() ? unk_ : it->second);
  }
  return ids;
}

int64_t WordPieceTokenizer::token_id(const std::string& token) const {
  auto it = ids_.find(token);
  LOPPER_CHECK(it != ids_.end(), "[wordpiece] no token '", token, "' in the vocab");
  return it->second;
}

const std::string& WordPieceTokenizer::token(int64_t id) const {
  LOPPER_CHECK(id >= 0 && id < vocab_size(), "[wordpiece] id ", id, " outside the vocab of ", vocab_size());
  return vocab_[static_cast<size_t>(id)];
}

Encoding Tokenizer::encode(const std::string& a, const std::string* b, int64_t max_length) const {
  std::vector<int64_t> ia = encode_ids(a), ib;
  if (b) ib = encode_ids(*b);
  if (max_length > 0) {
    int64_t special = b ? 3 : 2;
    LOPPER_CHECK(max_length >= special, "[tokenizer] max_length ", max_length, " leaves no room for the ", special,
                 " special tokens");
    // longest_first as the tokenizers library does it: if both must shrink, the shorter
    // (the first on a tie) keeps half the budget and the longer takes the rest.
    size_t budget = static_cast<size_t>(max_length - special);
    if (!b) {
      if (ia.size() > budget) ia.resize(budget);
    } else if (ia.size() + ib.size() > budget) {
      bool swap = ia.size() > ib.size();
      size_t small = swap ? ib.size() : ia.size();
      small = std::min(small, budget / 2);
      size_t large = budget - small;
      (swap ? ib : ia).resize(small);
      (swap ? ia : ib).resize(std::min(large, (swap ? ia : ib).size()));
    }
  }
  Encoding e;
  e.input_ids.push_back(cls_id());
  e.input_ids.insert(e.input_ids.end(), ia.begin(), ia.end());
  e.input_ids.push_back(sep_id());
  e.token_type_ids.assign(e.input_ids.size(), 0);
  if (b) {
    e.input_ids.insert(e.input_ids.end(), ib.begin(), ib.end());
    e.input_ids.push_back(sep_id());
    e.token_type_ids.resize(e.input_ids.size(), 1);
  }
  return e;
}

}  // namespace lopper::data
