// train_tiny: trains the tiny example encoder to sort digit sequences and reports token
// accuracy: the engine's smoke test on a fresh machine, with no model or data to fetch.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "nn/losses.h"
#include "nn/optim.h"
#include "nn/tiny_encoder.h"

using namespace lopper;

int main(int argc, char** argv) {
  CLI::App app{"Trains the tiny example encoder to sort digit sequences and reports its token accuracy.", "train_tiny"};
  int64_t steps = 600, seed = 1;
  int threads = 0;
  app.add_option("--steps", steps, "optimizer steps")->check(apps::at_least(1));
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->check(apps::at_least(0));
  app.add_option("--seed", seed, "seed of the initialization and the data");
  bool verbose = false;
  apps::add_verbose(app, verbose);
  if (int code = apps::parse_args(app, argc, argv); code >= 0) return code;
  try {
    if (threads > 0) omp_set_num_threads(threads);
    const int64_t vocab = 10, seq = 8, batch = 64;
    Generator init(static_cast<uint64_t>(seed)), data(static_cast<uint64_t>(seed) + 1);
    nn::TinyEncoder model(vocab, seq, 64, 4, 2, init);
    nn::AdamW opt(nn::decay_groups(model.named_parameters(), 3e-3, 0.01));
    nn::LrSchedule sched{nn::ScheduleKind::cosine, steps / 6, steps};
    std::printf("train_tiny: %lld parameters, %lld steps, %d threads\n",
                static_cast<long long>(model.num_parameters()), static_cast<long long>(steps), omp_get_max_threads());
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      auto [x, y] = nn::sort_digits_batch(batch, seq, vocab, data);
      Variable loss = nn::cross_entropy(ag::reshape(model.forward(x), {-1, vocab}), y);
      opt.zero_grad();
      loss.backward();
      nn::clip_grad_norm(model.parameters(), 1.0);
      opt.step(sched.factor(opt.steps()));
      if (s % 100 == 0 || s + 1 == steps) {
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("step %5lld  loss %.4f  lr %.2e  %.0f examples/s\n", static_cast<long long>(s),
                    loss.data().item<double>(), 3e-3 * sched.factor(s), (s + 1) * batch / secs);
      }
    }
    model.eval();
    NoGradGuard ng;
    Generator test(12345);
    auto [x, y] = nn::sort_digits_batch(1000, seq, vocab, test);
    auto pred = argmax(model.forward(x).data(), -1).reshape({-1}).to_vector<int64_t>();
    auto truth = y.to_vector<int64_t>();
    int64_t correct = 0;
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == truth[i];
    std::printf("token accuracy on 1000 unseen sequences: %.4f\n", static_cast<double>(correct) / pred.size());
  } catch (const std::exception& e) {
    return apps::report_error(app, e, verbose);
  }
  return 0;
}
