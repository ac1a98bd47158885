// tokenize: one text per line (or two tab-separated texts with --pairs) on stdin, one JSON
// object per line on stdout: {"input_ids": [...], "token_type_ids": [...]}, so anyone can
// diff Lopper's tokenizer against transformers'.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/cli.h"
#include "core/error.h"
#include "data/tokenizer.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"Tokenizes stdin, one text per line (with --pairs: two texts separated by a tab), and prints one\n"
               "JSON object per line: {\"input_ids\": [...], \"token_type_ids\": [...]}.",
               "tokenize"};
  std::string vocab, model;
  bool pairs = false, cased = false, lowercase = false;
  int64_t max_len = 0;
  auto* v = app.add_option("--vocab", vocab, "a WordPiece vocab.txt")->check(CLI::ExistingFile);
  auto* m = app.add_option("--model", model, "a Hugging Face model folder (its tokenizer files)")->check(CLI::ExistingDirectory);
  v->excludes(m);
  auto* l = app.add_flag("--lowercase", lowercase, "with --vocab: lowercase and strip accents (the default)");
  auto* c = app.add_flag("--cased", cased, "with --vocab: keep case and accents");
  c->needs(v);
  l->excludes(c);
  app.add_flag("--pairs", pairs, "two texts per line, separated by a tab");
  app.add_option("--max-len", max_len, "truncate to this many tokens (0: no limit)")->check(apps::at_least(0));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    LOPPER_CHECK(vocab.empty() != model.empty(), "give exactly one of --vocab and --model (try --help)");
    std::unique_ptr<data::Tokenizer> tok;
    if (!model.empty()) {
      tok = data::load_tokenizer(model);
    } else {
      data::WordPieceOptions o;
      o.lowercase = o.strip_accents = !cased;
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
    return apps::report_error(app, e, verbose);
  }
  return 0;
}
