// tokenize: one text per line (or two tab-separated texts with --pairs) on stdin, one JSON
// object per line on stdout: {"input_ids": [...], "token_type_ids": [...]}, so anyone can
// diff Lopper's tokenizer against transformers'.
// Usage: tokenize (--vocab vocab.txt [--lowercase|--cased] | --model DIR) [--pairs] [--max-len N]
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "data/tokenizer.h"

using namespace lopper;

namespace {
const char* kUsage =
    "usage: tokenize (--vocab vocab.txt [--lowercase|--cased] | --model DIR) [--pairs] [--max-len N] < input\n"
    "  one text per line (with --pairs: two texts separated by a tab); prints one JSON object per line\n";
}

int main(int argc, char** argv) {
  std::string vocab, model;
  bool pairs = false, lowercase = true;
  int64_t max_len = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        LOPPER_CHECK(i + 1 < argc, "missing value after ", a);
        return argv[++i];
      };
      if (a == "--vocab") vocab = next();
      else if (a == "--model") model = next();
      else if (a == "--pairs") pairs = true;
      else if (a == "--lowercase") lowercase = true;
      else if (a == "--cased") lowercase = false;
      else if (a == "--max-len") {
        std::string v = next();
        size_t used = 0;
        max_len = std::stoll(v, &used);
        LOPPER_CHECK(used == v.size() && max_len > 0, "--max-len needs a positive integer, got '", v, "'");
      } else if (a == "--help" || a == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else {
        LOPPER_FAIL("unknown argument '", a, "'\n", kUsage);
      }
    }
    LOPPER_CHECK(vocab.empty() != model.empty(), "give exactly one of --vocab and --model\n", kUsage);
    std::unique_ptr<data::Tokenizer> tok;
    if (!model.empty()) {
      tok = data::load_tokenizer(model);
    } else {
      data::WordPieceOptions o;
      o.lowercase = o.strip_accents = lowercase;
      tok = std::make_unique<data::WordPieceTokenizer>(vocab, o);
    }
    std::string line;
    int64_t n = 0;
    while (std::getline(std::cin, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      data::Encoding e;
      if (pairs) {
        size_t tab = line.find('\t');
        LOPPER_CHECK(tab != std::string::npos, "line ", n, ": --pairs needs two texts separated by a tab");
        std::string b = line.substr(tab + 1);
        e = tok->encode(line.substr(0, tab), &b, max_len);
      } else {
        e = tok->encode(line, nullptr, max_len);
      }
      std::cout << nlohmann::json{{"input_ids", e.input_ids}, {"token_type_ids", e.token_type_ids}}.dump() << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenize: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
