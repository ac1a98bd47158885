// latency_table: measures this machine's forward latency of one BERT attention block per
// head count and one FFN block per neuron count, for the model's shapes, and writes the JSON
// table that fisher_search's latency constraint reads (Kwon et al.'s generate_lut.py).
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "apps/cli.h"
#include "core/error.h"
#include "nn/bert_config.h"
#include "pruning/latency.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"Measures the latency of one attention block for 1..heads heads and one FFN block for\n"
               "1..intermediate_size neurons (every --ffn-step, linear in between) at one batch size and\n"
               "sequence length, and writes the table the fisher_search stage reads for \"constraint\": \"latency\".",
               "latency_table"};
  std::string model, out;
  int64_t batch = 32, seq_len = 25, ffn_step = 32, repeats = 31, threads = 0;
  app.add_option("model", model, "a Hugging Face model folder (its config.json), or a config.json")->required();
  app.add_option("--out", out, "the table to write (JSON)")->required();
  app.add_option("--batch", batch, "sentences per forward (default 32)")->check(apps::at_least(1));
  app.add_option("--seq-len", seq_len, "tokens per sentence (default 25, SST-2's dev mean)")->check(apps::at_least(1));
  app.add_option("--ffn-step", ffn_step, "neuron counts measured every this many (default 32)")->check(apps::at_least(1));
  app.add_option("--repeats", repeats, "timed forwards per entry, the median kept (default 31)")->check(apps::at_least(1));
  app.add_option("--threads", threads, "OpenMP threads (default: all cores, as the runs use)")->check(apps::at_least(0));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    namespace fs = std::filesystem;
    std::string config = fs::is_directory(model) ? (fs::path(model) / "config.json").string() : model;
    LOPPER_CHECK(fs::is_regular_file(config), "'", config, "' does not exist (give a model folder or its config.json)");
    nn::BertConfig c = nn::BertConfig::from_file(config);
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
    pruning::LatencyTable t = pruning::measure_latency_table(c, batch, seq_len, ffn_step, repeats);
    t.save(out);
    std::fprintf(stderr, "latency_table: %s (%lld threads, %s): attention %.3f ms at %lld heads, FFN %.3f ms at %lld neurons\n",
                 out.c_str(), static_cast<long long>(t.threads), t.cpu.c_str(), t.attention.back(),
                 static_cast<long long>(t.attention.size() - 1), t.ffn.back(), static_cast<long long>(t.ffn.size() - 1));
  } catch (const std::exception& e) {
    return apps::report_error(app, e, verbose);
  }
  return 0;
}
