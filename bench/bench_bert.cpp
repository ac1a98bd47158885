// bench_bert: MiniLM-class BERT throughput, forward (inference) or a full training step
// (forward, backward, AdamW), at a fixed batch and sequence length on random token ids.
// Prints one JSON line so scripts/bench_vs_torch.sh can put it next to PyTorch's.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "nn/bert.h"
#include "nn/optim.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"BERT throughput on random ids: a forward pass, or a training step (forward, backward, AdamW).",
               "bench_bert"};
  std::string model_dir, mode = "forward";
  int64_t batch = 32, seq = 128, iters = 10, warmup = 2;
  int threads = 0;
  app.add_option("--model", model_dir, "a Hugging Face BERT folder")->required()->check(CLI::ExistingDirectory);
  app.add_option("--batch", batch, "sequences per batch")->check(apps::at_least(1));
  app.add_option("--seq", seq, "tokens per sequence")->check(apps::at_least(1));
  app.add_option("--iters", iters, "timed iterations (after 2 warm-up ones)")->check(apps::at_least(1));
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->check(apps::at_least(0));
  app.add_option("--mode", mode, "forward or train")->check(CLI::IsMember({"forward", "train"}));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    if (threads > 0) omp_set_num_threads(threads);
    nn::BertConfig cfg = nn::BertConfig::from_file(model_dir + "/config.json");
    cfg.num_labels = 2;
    Generator init(0), data(1), dropout(2);
    nn::BertForSequenceClassification model(cfg, init);
    nn::load_pretrained(model, model_dir, true);
    Tensor ids = Tensor::from_vector(std::vector<int64_t>(batch * seq), {batch, seq});
    {
      auto* p = ids.data<int64_t>();
      for (int64_t i = 0; i < batch * seq; ++i) p[i] = 1000 + static_cast<int64_t>(data.next_below(20000));
    }
    Tensor mask = Tensor::ones({batch, seq}, DType::i64);
    Tensor labels = Tensor::zeros({batch}, DType::i64);
    nn::AdamW opt(nn::decay_groups(model.named_parameters(), 2e-5, 0.01));
    auto step = [&] {
      if (mode == "forward") {
        NoGradGuard ng;
        model.eval();
        Variable logits = model.forward(ids, Tensor(), mask);
        return logits.data().to_vector<float>()[0];
      }
      model.train();
      nn::ForwardContext ctx{&dropout};
      Variable loss = model.loss(model.forward(ids, Tensor(), mask, ctx), labels);
      opt.zero_grad();
      loss.backward();
      nn::clip_grad_norm(model.parameters(), 1.0);
      opt.step();
      return loss.data().item<float>();
    };
    for (int64_t i = 0; i < warmup; ++i) step();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) step();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    std::printf("{\"impl\": \"lopper\", \"mode\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"threads\": %d, "
                "\"seconds_per_step\": %.4f, \"sentences_per_s\": %.1f, \"tokens_per_s\": %.0f}\n",
                mode.c_str(), static_cast<long long>(batch), static_cast<long long>(seq), omp_get_max_threads(), secs,
                batch / secs, batch * seq / secs);
  } catch (const std::exception& e) {
    return apps::report_error(app, e, verbose);
  }
  return 0;
}
