// bench_allreduce: the gradient all-reduce alone, as the trainer runs it each step
// (all_reduce_gradients: a model's gradients packed into 25 MB buckets, averaged over the
// ranks), on the model a config.json describes. Run under the launcher:
//   mpirun -np 2 build/bench/bench_allreduce --config bench/configs/minilm-l6.json
// Rank 0 prints one JSON line: bytes, median and min ms over the timed calls, GB/s of
// gradient per rank. Each call starts after a barrier, so no rank's wait for a slower one
// is counted (in training it is: there the all-reduce also absorbs the ranks' imbalance).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "core/ops.h"
#include "nn/bert.h"
#include "trainers/communicator.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"The gradient all-reduce of a BERT model, timed; run under mpirun or srun.", "bench_allreduce"};
  std::string config_file;
  int64_t iters = 20;
  double bucket_mb = 25;
  app.add_option("--config", config_file, "a Hugging Face BERT config.json: the model whose gradients are reduced")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--iters", iters, "timed calls (after 2 warm-up ones)")->check(apps::at_least(1));
  app.add_option("--bucket-mb", bucket_mb, "bucket size in MB")->check(CLI::Range(0.001, 4096.0));
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    auto comm = trainers::make_communicator();
    Generator g(1);
    nn::BertForSequenceClassification model(nn::BertConfig::from_file(config_file), g);
    std::vector<Variable> params = model.parameters();
    size_t bytes = 0;
    for (Variable& p : params) {
      p.set_grad(Tensor::ones(p.data().shape(), p.data().dtype()));
      bytes += static_cast<size_t>(p.data().numel()) * p.data().itemsize();
    }
    std::vector<double> ms;
    for (int64_t i = 0; i < iters + 2; ++i) {
      comm->barrier();
      auto t0 = std::chrono::steady_clock::now();
      trainers::all_reduce_gradients(*comm, params, static_cast<size_t>(bucket_mb * (1 << 20)));
      double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= 2) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    if (comm->rank() == 0)
      std::printf("{\"ranks\": %d, \"communicator\": \"%s\", \"bytes\": %zu, \"bucket_mb\": %g, \"median_ms\": %.3f, "
                  "\"min_ms\": %.3f, \"gb_per_s\": %.3f}\n",
                  comm->size(), comm->name().c_str(), bytes, bucket_mb, ms[ms.size() / 2], ms[0],
                  static_cast<double>(bytes) / 1e6 / ms[ms.size() / 2]);
  } catch (const std::exception& ex) {
    return apps::report_error(app, ex, verbose, trainers::launcher_rank_label());
  }
  return 0;
}
