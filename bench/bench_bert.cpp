// bench_bert: MiniLM-class BERT throughput, forward (inference) or a full training step
// (forward, backward, AdamW), at a fixed batch and sequence length on random token ids.
// Prints one JSON line so scripts/bench_vs_torch.sh (CPU) and scripts/gpu_check.sh (CUDA)
// can put it next to PyTorch's (bench/torch_bert.py, same options).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "nn/bert.h"
#include "nn/block_sparse.h"
#include "nn/optim.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"BERT throughput on random ids: a forward pass, or a training step (forward, backward, AdamW).",
               "bench_bert"};
  std::string model_dir, config_file, mode = "forward", device = "cpu";
  int64_t batch = 32, seq = 128, iters = 10, warmup = 2;
  int threads = 0;
  auto* model_opt =
      app.add_option("--model", model_dir, "a Hugging Face BERT folder (its config and weights)")->check(CLI::ExistingDirectory);
  app.add_option("--config", config_file, "a Hugging Face BERT config.json: random weights of that shape")
      ->check(CLI::ExistingFile)
      ->excludes(model_opt);
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  bool tf32 = false;
  app.add_flag("--tf32", tf32, "CUDA: let cuBLAS use TF32 tensor cores for f32 GEMMs");
  app.add_option("--batch", batch, "sequences per batch")->check(apps::at_least(1));
  app.add_option("--seq", seq, "tokens per sequence")->check(apps::at_least(1));
  app.add_option("--iters", iters, "timed iterations (after 2 warm-up ones)")->check(apps::at_least(1));
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->check(apps::at_least(0));
  app.add_option("--mode", mode, "forward or train")->check(CLI::IsMember({"forward", "train"}));
  double block_sparse = 0;
  app.add_option("--block-sparse", block_sparse,
                 "forward on the CPU: run each Linear whose share of non-zero 32x32 (else 16x16) blocks is at "
                 "most this through the block-sparse matmul (0: all dense)")
      ->check(CLI::Range(0.0, 1.0));
  int64_t dense_max_rows = nn::BlockSparseOptions{}.dense_max_rows;
  app.add_option("--dense-max-rows", dense_max_rows,
                 "forward on the CPU: dense Linears run through the packed libxsmm kernel for batches of at most "
                 "this many tokens (0: always oneDNN)")
      ->check(apps::at_least(0));
  std::string dense_panels = "never";
  app.add_option("--dense-panels", dense_panels,
                 "forward on the CPU: dense Linears through the panel-packed GEMM where the CPU has no AVX-512 "
                 "(auto), always, or never (the default)")
      ->check(CLI::IsMember(nn::BlockSparseOptions::panels_names()));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    if (threads > 0) omp_set_num_threads(threads);
    if (model_dir.empty() == config_file.empty()) throw Error("give one of --model or --config");
    Device dev = Device::parse(device);
    set_cuda_tf32(tf32);
    nn::BertConfig cfg = nn::BertConfig::from_file(config_file.empty() ? model_dir + "/config.json" : config_file);
    cfg.num_labels = 2;
    Generator init(0), data(1), dropout(2);
    nn::BertForSequenceClassification model(cfg, init);
    if (!model_dir.empty()) nn::load_pretrained(model, model_dir, true);
    model.to(dev);
    Tensor ids = Tensor::from_vector(std::vector<int64_t>(batch * seq), {batch, seq});
    {  // ids in [1000, 21000) for a BERT-sized vocabulary, within a small one's too
      const int64_t lo = std::min<int64_t>(1000, cfg.vocab_size / 2), span = std::min<int64_t>(20000, cfg.vocab_size - lo);
      auto* p = ids.data<int64_t>();
      for (int64_t i = 0; i < batch * seq; ++i) p[i] = lo + static_cast<int64_t>(data.next_below(static_cast<uint64_t>(span)));
    }
    ids = ids.to(dev);
    Tensor mask = Tensor::ones({batch, seq}, DType::i64, dev);
    nn::BlockSparseOptions sparse_options;
    sparse_options.max_density = mode == "forward" ? block_sparse : 0.0;
    sparse_options.dense_max_rows = mode == "forward" ? dense_max_rows : 0;
    sparse_options.dense_panels = mode == "forward" ? nn::BlockSparseOptions::panels_from_name(dense_panels)
                                                    : nn::BlockSparseOptions::Panels::never;
    nn::BlockSparseScope sparse(model, sparse_options);
    if (verbose || sparse.sparse_count() > 0) std::fprintf(stderr, "%s\n", sparse.describe().c_str());
    int64_t panel_linears = 0;
    for (const auto& l : sparse.layers()) panel_linears += l.panels;
    Tensor labels = Tensor::zeros({batch}, DType::i64, dev);
    nn::AdamW opt(nn::decay_groups(model.named_parameters(), 2e-5, 0.01));
    auto step = [&] {
      if (mode == "forward") {
        NoGradGuard ng;
        model.eval();
        Variable logits = model.forward(ids, Tensor(), mask);
        return logits.data().to_vector<float>()[0];  // to the host: waits for the device
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
    std::printf("{\"impl\": \"lopper\", \"device\": \"%s\", \"tf32\": %s, \"hidden\": %lld, \"layers\": %lld, "
                "\"mode\": \"%s\", \"block_sparse_linears\": %lld, \"dense_max_rows\": %lld, \"panel_linears\": %lld, \"batch\": %lld, \"seq\": %lld, \"threads\": %d, "
                "\"seconds_per_step\": %.6f, \"sentences_per_s\": %.1f, \"tokens_per_s\": %.0f}\n",
                dev.str().c_str(), tf32 ? "true" : "false", static_cast<long long>(cfg.hidden_size),
                static_cast<long long>(cfg.num_hidden_layers), mode.c_str(), static_cast<long long>(sparse.sparse_count()), static_cast<long long>(sparse_options.dense_max_rows), static_cast<long long>(panel_linears),
                static_cast<long long>(batch), static_cast<long long>(seq), omp_get_max_threads(), secs,
                batch / secs, batch * seq / secs);
  } catch (const std::exception& e) {
    return apps::report_error(app, e, verbose);
  }
  return 0;
}
